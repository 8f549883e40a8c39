"""``mpirun -n N python -m mpi_workers.train_check --backend torch|horovod``: prove data parallelism.

Each rank starts from *different* random weights (so only the backend's broadcast can make them
agree), takes its slice of one fixed batch of Fashion-MNIST frames and runs ``--steps`` optimizer
steps through the backend. Rank 0 then gathers every rank's weights (raw MPI buffers) and replays
the same steps in a single process on the combined batch, starting from its own initial weights.

Data parallelism is right when every rank holds identical weights and they equal the single-process
result (up to float rounding). BatchNorm runs on running statistics and dropout is off during the
check (``model.eval()``): batch statistics over a slice are not those of the whole batch, so only
then is "mean of per-rank gradients == gradient of the combined batch" exact.

Rank 0 prints one JSON line: the largest differences and how far the step moved the weights.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from mpi_workers.dist import abort_on_error, world


@abort_on_error
def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.nn.functional as F
    from torch.nn.utils import parameters_to_vector

    from framestream import fashion_mnist
    from models.nets import DEFAULT_SPECS, build
    from models.spec import normalize
    from models.train_loop import frames_of
    from mpi_workers.backends import BACKENDS, select_backend, yield_when_idle

    p = argparse.ArgumentParser(prog="python -m mpi_workers.train_check")
    p.add_argument("--backend", choices=BACKENDS, default="torch")
    p.add_argument("--per-rank", type=int, default=16, help="samples per rank per step")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--no-sync", action="store_true",
                   help="negative control: step without averaging gradients (torch backend)")
    args = p.parse_args(argv)

    yield_when_idle()
    from mpi4py import MPI  # starts MPI: after yield_when_idle

    comm = world()
    rank, size = comm.rank, comm.size
    torch.set_num_threads(1)
    spec = DEFAULT_SPECS["fashion_cnn"]
    backend = select_backend(args.backend, comm, torch.device("cpu"))

    def fresh_model(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build("fashion_cnn", width=8, dropout=0.0).eval()

    def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    model = fresh_model(seed=1000 + rank)  # deliberately different on every rank
    before = parameters_to_vector(model.parameters()).detach().clone()
    backend.broadcast_model(model)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = backend.wrap_optimizer(make_optimizer(model), model)

    images, labels = fashion_mnist.load("train")
    total = size * args.per_rank

    def step_batch(step: int, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.arange(step * total + lo, step * total + hi)
        x = normalize(frames_of(images, index), spec)
        return x, torch.from_numpy(labels[index].astype(np.int64))

    for step in range(args.steps):
        x, y = step_batch(step, rank * args.per_rank, (rank + 1) * args.per_rank)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if args.no_sync:
            optimizer.step()
        else:
            backend.step(optimizer, model)
    mine = parameters_to_vector(model.parameters()).detach().numpy().astype(np.float64)
    gathered = np.empty((size, 2, mine.size), dtype=np.float64) if rank == 0 else None
    comm.Gather(np.stack([before.numpy().astype(np.float64), mine]), gathered, root=0)
    backend.close()
    if rank != 0:
        return 0

    reference = fresh_model(seed=0)
    reference.load_state_dict(init_state)
    start = parameters_to_vector(reference.parameters()).detach().numpy().astype(np.float64)
    ref_opt = make_optimizer(reference)
    for step in range(args.steps):
        x, y = step_batch(step, 0, total)
        ref_opt.zero_grad()
        F.cross_entropy(reference(x), y).backward()  # the mean over the combined batch
        ref_opt.step()
    ref = parameters_to_vector(reference.parameters()).detach().numpy().astype(np.float64)
    initial, final = gathered[:, 0], gathered[:, 1]
    print(json.dumps({
        "backend": backend.name, "world_size": size, "steps": args.steps,
        "params": int(mine.size), "mpi_version": list(MPI.Get_version()),
        "initial_spread_between_ranks": float(np.abs(initial - initial[0]).max()),
        "max_diff_between_ranks": float(np.abs(final - final[0]).max()),
        "max_diff_vs_single_process": float(np.abs(final[0] - ref).max()),
        "max_update": float(np.abs(final[0] - start).max()),
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
