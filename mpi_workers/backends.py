"""Data-parallel training backends behind one small interface: Horovod or torch.distributed.

Both start from MPI (the ranks run under ``mpirun``) and give the same semantics, so the training
loop in :mod:`mpi_workers.train` never asks which one it has:

- :meth:`Backend.broadcast_model` / :meth:`Backend.broadcast_optimizer_state`: rank 0's values to
  every rank (identical starting points);
- :meth:`Backend.step`: average the gradients over all ranks, then update (every step);
- :meth:`Backend.average_buffers`: average BatchNorm running statistics (each rank updates its own
  from its local batches; averaging keeps the ranks' models identical for checkpoint and eval).

``torch``: the default process group bootstrapped by :func:`mpi_workers.dist.init_torch_distributed`
(gloo on CPU, nccl on GPU); one flattened allreduce of all gradients per step.
``horovod``: ``hvd.DistributedOptimizer`` (allreduce overlapped with backward) and
``hvd.broadcast_parameters``. Horovod's own ``broadcast_optimizer_state`` ships scalar options
with cloudpickle; framestream sends no pickle between processes, so the optimizer's tensor state
goes through ``hvd.broadcast_parameters`` and its options come from identical arguments on every
rank (or from the checkpoint every rank loads).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import nn

from framestream.errors import ConfigError
from mpi_workers.errors import BackendUnavailable  # noqa: F401  (also backends' API)

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm

log = logging.getLogger(__name__)
BACKENDS = ("auto", "horovod", "torch")


def yield_when_idle() -> None:
    """Let Open MPI yield the CPU while it waits for the other ranks. Call before MPI starts.

    Open MPI busy-polls by default. Horovod's background thread waits inside MPI calls, so when the
    ranks already use every core for training, that spin takes CPU from them: on 2 cores, 2 ranks,
    Horovod epochs took 2.1x as long as torch.distributed's (gloo waits on sockets); with this
    setting they take about as long. An explicit OMPI_MCA_mpi_yield_when_idle wins.
    """
    os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")


class Backend(ABC):
    """One rank's view of the data-parallel group."""

    name: str

    #: whether the net may train in channels_last memory format (models.train_loop.for_training)
    channels_last = False

    def __init__(self, comm: "Intracomm", device: torch.device) -> None:
        self.comm, self.device = comm, device
        self.rank, self.size = comm.rank, comm.size

    @abstractmethod
    def broadcast_(self, tensors: list[torch.Tensor], root: int = 0) -> None:
        """Overwrite ``tensors`` in place with ``root``'s values."""

    @abstractmethod
    def allreduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        """Replace floating-point ``tensors`` in place by their mean over the ranks."""

    @abstractmethod
    def wrap_optimizer(self, optimizer: torch.optim.Optimizer,
                       model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer to use from now on (create LR schedulers on the result)."""

    @abstractmethod
    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """After ``loss.backward()``: average gradients over ranks, then ``optimizer.step()``."""

    def close(self) -> None:
        """Leave the group (collective: every rank calls it)."""

    def broadcast_model(self, model: nn.Module) -> None:
        """Parameters and buffers of rank 0 on every rank."""
        self.broadcast_(list(model.state_dict().values()))

    def broadcast_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's tensor state (moments, step counts) of rank 0 on every rank."""
        self.broadcast_(optimizer_tensors(optimizer))

    def average_buffers(self, model: nn.Module) -> None:
        self.allreduce_mean_([b for b in model.buffers() if b.is_floating_point()])


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors of the optimizer's state, in parameter order (the same on every rank)."""
    out: list[torch.Tensor] = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key in sorted(optimizer.state.get(p, {})):
                value = optimizer.state[p][key]
                if torch.is_tensor(value):
                    out.append(value)
    return out


class TorchBackend(Backend):
    name = "torch"
    channels_last = True  # gloo/nccl collectives and the flattening above take any layout

    def __init__(self, comm: "Intracomm", device: torch.device, timeout_s: float = 120.0) -> None:
        super().__init__(comm, device)
        import torch.distributed as dist

        from mpi_workers.dist import init_torch_distributed

        self._dist = dist
        self.pg_backend = init_torch_distributed(
            comm, backend="nccl" if device.type == "cuda" else "gloo", timeout_s=timeout_s)

    def _on_device(self, t: torch.Tensor) -> torch.Tensor:
        # nccl only moves device tensors; optimizer step counters live on the CPU.
        return t if t.device == self.device or self.pg_backend == "gloo" else t.to(self.device)

    def broadcast_(self, tensors: list[torch.Tensor], root: int = 0) -> None:
        for t in tensors:
            moved = self._on_device(t)
            self._dist.broadcast(moved, src=root)
            if moved is not t:
                t.copy_(moved)

    def allreduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        if not tensors:
            return
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        flat = self._on_device(_flatten_dense_tensors([t.detach() for t in tensors]))
        self._dist.all_reduce(flat)
        flat.div_(self.size)
        for t, avg in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
            t.detach().copy_(avg)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer,
                       model: nn.Module) -> torch.optim.Optimizer:
        return optimizer

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:  # unused this step: still take part, or the collective differs
                p.grad = torch.zeros_like(p)
        self.allreduce_mean_([p.grad for p in params])
        optimizer.step()

    def close(self) -> None:
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


class HorovodBackend(Backend):
    name = "horovod"
    channels_last = False  # horovod.torch refuses non-contiguous tensors (mpi_ops: "Tensor is
    #                        required to be contiguous"), and channels_last grads are not

    def __init__(self, comm: "Intracomm", device: torch.device, timeout_s: float = 120.0) -> None:
        super().__init__(comm, device)
        # A rank that stops answering makes Horovod shut down instead of waiting forever.
        os.environ.setdefault("HOROVOD_STALL_CHECK_TIME_SECONDS", str(max(5, int(timeout_s) // 4)))
        os.environ.setdefault("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", str(int(timeout_s)))
        import horovod
        import horovod.torch as hvd

        self.hvd, self.version = hvd, horovod.__version__
        hvd.init(comm=comm)
        if hvd.size() != comm.size or hvd.rank() != comm.rank:
            raise BackendUnavailable(f"horovod sees rank {hvd.rank()}/{hvd.size()}, MPI "
                                     f"{comm.rank}/{comm.size}")
        self._calls = 0
        log.info("horovod %s up: rank %d/%d", self.version, hvd.rank(), hvd.size())

    def _names(self, what: str, n: int) -> list[str]:
        self._calls += 1  # every rank makes the same calls in the same order
        return [f"{what}.{self._calls}.{i}" for i in range(n)]

    def broadcast_model(self, model: nn.Module) -> None:
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def broadcast_(self, tensors: list[torch.Tensor], root: int = 0) -> None:
        if tensors:
            self.hvd.broadcast_parameters(list(zip(self._names("bcast", len(tensors)), tensors)),
                                          root_rank=root)

    def allreduce_mean_(self, tensors: list[torch.Tensor]) -> None:
        if tensors:
            self.hvd.grouped_allreduce_(tensors, op=self.hvd.Average,
                                        name=self._names("mean", 1)[0])

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer,
                       model: nn.Module) -> torch.optim.Optimizer:
        # A new optimizer object over the same param groups: load state into the result.
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                             op=self.hvd.Average)

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        optimizer.step()  # DistributedOptimizer.step() waits for the gradient allreduces first

    def close(self) -> None:
        self.hvd.shutdown()


def horovod_importable() -> tuple[bool, str]:
    """(True, "") when ``horovod.torch`` imports here, else (False, why)."""
    try:
        import horovod.torch  # noqa: F401
    except (ImportError, OSError) as e:  # OSError: a wheel built against another torch
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def select_backend(name: str, comm: "Intracomm", device: torch.device,
                   timeout_s: float = 120.0) -> Backend:
    """Start the backend ``name`` (auto | horovod | torch) on every rank (collective).

    ``auto`` is horovod when it imports on every rank, else torch. Raises ConfigError for an
    unknown name and :class:`BackendUnavailable` when horovod is asked for but missing.
    """
    import numpy as np
    from mpi4py import MPI

    if name not in BACKENDS:
        raise ConfigError("--backend / FRAMESTREAM_TRAIN_BACKEND", name, f"one of {BACKENDS}")
    ok, why = horovod_importable() if name != "torch" else (False, "not asked for")
    everywhere = np.array([1 if ok else 0], dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, everywhere, op=MPI.MIN)  # the same choice on every rank
    if name == "horovod" and not everywhere[0]:
        raise BackendUnavailable(
            f"--backend horovod but horovod.torch does not import on every rank (here: "
            f"{why or 'fine'}). Run `make setup` (it builds Horovod; see "
            f"$FRAMESTREAM_CACHE/logs/horovod.log) or use --backend torch")
    if name == "auto":
        name = "horovod" if everywhere[0] else "torch"
        if comm.rank == 0 and name == "torch":
            log.info("backend auto -> torch (horovod unavailable: %s)", why)
    return (HorovodBackend if name == "horovod" else TorchBackend)(comm, device, timeout_s)
