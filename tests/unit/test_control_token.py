"""The gang's control token: made by whoever starts mpirun, given to the ranks alone."""

from __future__ import annotations

import os

import pytest

from launcher.mpirun import mpi_env
from framestream.wire import CONTROL_TOKEN_ENV
from mpi_workers.rank_socket import control_token_from_env


def test_mpi_env_makes_a_fresh_token_and_never_inherits_ours(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv(CONTROL_TOKEN_ENV, "inherited-by-spark-executors-too")
    a, b = mpi_env()[CONTROL_TOKEN_ENV], mpi_env()[CONTROL_TOKEN_ENV]
    assert a != b and "inherited" not in a + b and len(a) >= 32
    assert mpi_env({CONTROL_TOKEN_ENV: "mine"})[CONTROL_TOKEN_ENV] == "mine"  # the caller's own
    assert os.environ[CONTROL_TOKEN_ENV] == "inherited-by-spark-executors-too"  # ours untouched


def test_a_rank_takes_the_token_out_of_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONTROL_TOKEN_ENV, "t0k3n")
    assert control_token_from_env() == "t0k3n"
    assert CONTROL_TOKEN_ENV not in os.environ  # nothing the rank starts inherits it
    assert control_token_from_env() is None


def test_a_gang_on_other_nodes_gets_the_token_by_name_never_on_the_command_line() -> None:
    from pathlib import Path

    from launcher.layout import BundleInfo, NodeAddress, plan
    from launcher.mpirun import GangLaunch

    head, node = NodeAddress("10.1.0.1", "br0", "10.1.0.0/24"), NodeAddress("10.1.0.2", "eth0",
                                                                          "10.1.0.0/24")
    lay = plan([BundleInfo(0, "a", head, "h", ()), BundleInfo(1, "b", node, "n", ())], head,
               rsh_agent="/x/agent")
    launch = GangLaunch(lay, Path("/tmp/hf"))
    cmd, env = launch.command("mpi_workers.serve"), launch.env()
    assert [cmd[i + 1] for i, c in enumerate(cmd) if c == "-x"].count(CONTROL_TOKEN_ENV) == 1
    assert env[CONTROL_TOKEN_ENV] and env[CONTROL_TOKEN_ENV] not in " ".join(cmd)
