"""mpi_workers.inference.forward: a frame's scores are the same bits whatever batch it is in, at
whatever position, next to whatever frames -- on real Fashion-MNIST frames, with random-init and
trained weights, on one thread and on the rank's default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framestream import fashion_mnist
from models.nets import DEFAULT_SPECS, build
from models.spec import normalize
from mpi_workers.inference import forward, forward_rows
from mpi_workers.model_cache import LoadedModel
from tests.helpers.rebatch import assert_batch_invariant

SPEC = DEFAULT_SPECS["fashion_cnn"]
FRAMES = 1500


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    images, _ = fashion_mnist.load("test")
    return images[:FRAMES].reshape(-1, *SPEC.shape)  # read-only, like frames off a socket


def _random_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("fashion_cnn").eval()


def _trained_like_net(frames: np.ndarray) -> torch.nn.Module:
    """Weights at the scale of a served model without minutes of training: BatchNorm statistics
    taken from real frames (not the identity of a fresh net) and a last layer scaled so the
    softmax is confident (top scores near 1, like a trained net's), not near-uniform."""
    net = _random_net()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the pass below
    net.train()
    with torch.no_grad():
        net(normalize(torch.from_numpy(frames[:512].copy()), SPEC))
        net.classifier[-1].weight.mul_(40.0)
    return net.eval()


@pytest.fixture(scope="module", params=["random", "trained"])
def model(request: pytest.FixtureRequest, frames: np.ndarray) -> LoadedModel:
    net = _random_net() if request.param == "random" else _trained_like_net(frames)
    return LoadedModel(f"{request.param}-fashion_cnn", net, SPEC, "cpu")


@pytest.mark.parametrize("threads", [1, None])
def test_scores_do_not_depend_on_the_batch(model: LoadedModel, frames: np.ndarray,
                                           threads: int | None) -> None:
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:  # the rank's --max-batch varies too: it must not change the forward shape
        assert_batch_invariant(lambda x, rng: forward(model, x, int(rng.integers(1, 300))),
                               frames, seed=7)
    finally:
        torch.set_num_threads(previous)


def test_the_scores_are_the_model_s(model: LoadedModel, frames: np.ndarray) -> None:
    """Padding changes no answer: the same probabilities as the plain forward, to float32."""
    with torch.inference_mode():
        plain = torch.softmax(model.net(normalize(torch.from_numpy(frames[:64].copy()), SPEC)),
                              dim=1).numpy()
    got = forward(model, frames[:64])
    assert got.shape == (64, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, plain, rtol=0, atol=1e-5)
    assert (got.argmax(1) == plain.argmax(1)).all()
    assert forward(model, frames[:0]).shape == (0, 10)
    assert forward_rows("cpu") >= 1 and forward_rows("cuda:0") >= forward_rows("cpu")
