"""Fixtures of the chaos suite: fresh topics per test, the profile (ci or long)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chaos.harness import Profile, profile


@pytest.fixture
def prof() -> Profile:
    return profile()


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> dict[str, str]:
    return {"frames": new_topic(4, "chaos-frames"), "predictions": new_topic(4, "chaos-preds"),
            "dlq": new_topic(4, "chaos-dlq")}
