"""Pure training helpers: sharding, augmentation, evaluation, checkpoints."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from models.nets import DEFAULT_SPECS, build
from models.train_loop import (augment, batches, checkpoint_bytes, checkpoint_from_bytes, evaluate,
                               make_optimizer, make_scheduler, shard_indices, steps_per_epoch)


@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (7, 3), (5, 1), (2, 4)])
def test_shards_cover_every_sample_with_equal_lengths(n: int, world: int) -> None:
    shards = [shard_indices(n, r, world, seed=1, epoch=0) for r in range(world)]
    assert len({len(s) for s in shards}) == 1                       # equal step counts
    assert set(np.concatenate(shards)) == set(range(n))             # nothing left out
    assert sum(len(s) for s in shards) - n < world                  # padding only to even out
    if n % world == 0:
        assert len(set(np.concatenate(shards))) == sum(len(s) for s in shards)  # disjoint
    for batch_size in (1, 3, 4):
        assert len(list(batches(shards[0], batch_size))) == steps_per_epoch(n, world, batch_size)


def test_shards_are_deterministic_per_epoch_and_reshuffled_between_epochs() -> None:
    a = shard_indices(1000, 1, 2, seed=3, epoch=4)
    assert np.array_equal(a, shard_indices(1000, 1, 2, seed=3, epoch=4))
    assert not np.array_equal(a, shard_indices(1000, 1, 2, seed=3, epoch=5))
    assert not np.array_equal(a, shard_indices(1000, 1, 2, seed=4, epoch=4))
    with pytest.raises(ValueError):
        shard_indices(10, 2, 2, seed=0, epoch=0)


def test_augment_flips_and_shifts_without_changing_shape_or_dtype() -> None:
    frames = torch.zeros(64, 28, 28, 1, dtype=torch.uint8)
    frames[:, 10, 5, 0] = 255                                       # one bright pixel
    out = augment(frames, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == frames.shape and out.dtype == torch.uint8
    ys, xs = [], []
    for img in out[..., 0]:
        (y,), (x,) = torch.nonzero(img, as_tuple=True)
        ys.append(int(y))
        xs.append(int(x))
    assert set(ys) <= set(range(8, 13))                             # shifted by at most 2
    assert {x for x in xs if x < 14} <= set(range(3, 8))            # unflipped: near column 5
    assert {x for x in xs if x >= 14} <= set(range(20, 25))         # flipped: near column 22
    assert len(set(ys)) > 1 and any(x >= 14 for x in xs) and any(x < 14 for x in xs)
    again = augment(frames, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)                                  # seeded: reproducible
    plain = augment(frames, torch.Generator().manual_seed(0), pad=0, flip=False)
    assert torch.equal(plain, frames)


def test_evaluate_counts_correct_predictions() -> None:
    class Oracle(torch.nn.Module):  # predicts class = mean pixel > 0 (after normalisation)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hot = (x.mean((1, 2, 3)) > 0).long()
            return torch.nn.functional.one_hot(hot, 10).float() * 10

    spec = DEFAULT_SPECS["fashion_cnn"]
    images = np.zeros((10, 28, 28), np.uint8)
    images[:4] = 255
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1], np.uint8)     # 3 + 5 right, 2 wrong
    correct, loss, count = evaluate(Oracle(), images, labels, spec, batch_size=3)
    assert (correct, count) == (8, 10) and loss > 0
    correct, _, count = evaluate(Oracle(), images, labels, spec, index=np.array([0, 9]))
    assert (correct, count) == (1, 2)


def test_checkpoint_round_trip_restores_model_optimizer_and_schedule() -> None:
    torch.manual_seed(0)
    net = build("fashion_cnn", width=4)
    opt = make_optimizer("adam", net, 1e-3)
    sched = make_scheduler(opt, 1e-3, total_steps=10)
    net(torch.randn(2, 1, 28, 28)).sum().backward()
    opt.step()
    sched.step()
    data = checkpoint_bytes({"model": net.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "history": [{"epoch": 1, "x": 0.5}]})
    state = checkpoint_from_bytes(data)
    net2 = build("fashion_cnn", width=4)
    opt2 = make_optimizer("adam", net2, 1e-3)
    sched2 = make_scheduler(opt2, 1e-3, total_steps=10)
    net2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert state["history"] == [{"epoch": 1, "x": 0.5}]
    assert sched2.get_last_lr() == sched.get_last_lr()
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)


class _Payload:
    def __reduce__(self):  # what a malicious checkpoint would carry
        return (print, ("unpickled!",))


def test_checkpoints_are_read_weights_only() -> None:
    buf = io.BytesIO()
    torch.save({"format": 1, "evil": _Payload()}, buf)
    with pytest.raises(pickle.UnpicklingError):
        checkpoint_from_bytes(buf.getvalue())
    buf = io.BytesIO()
    torch.save({"format": 99}, buf)
    with pytest.raises(ValueError, match="format 99"):
        checkpoint_from_bytes(buf.getvalue())


def test_channels_last_training_computes_what_the_default_layout_does() -> None:
    """The training layout is a speed choice only: same loss, same gradients, and weights that
    load into the default-format net serving uses."""
    import torch
    import torch.nn.functional as F

    from models.nets import DEFAULT_SPECS, build
    from models.train_loop import for_training, inputs

    spec = DEFAULT_SPECS["fashion_cnn"]
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1), np.uint8))
    y = torch.arange(16) % 10
    grads = []
    for cl in (False, True):
        torch.manual_seed(0)
        net = for_training(build("fashion_cnn", dropout=0.0), "cpu", channels_last=cl)
        x = inputs(frames, spec, "cpu", channels_last=cl)
        assert x.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        F.cross_entropy(net(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
        if cl:
            assert net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
            served = build("fashion_cnn", dropout=0.0).eval()
            served.load_state_dict({k: v.contiguous() for k, v in net.state_dict().items()})
            net.eval()
            with torch.no_grad():
                assert torch.allclose(served(inputs(frames, spec, "cpu", False)), net(x), atol=1e-5)
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-5, rtol=1e-4), name
