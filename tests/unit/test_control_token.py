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


def test_ranks_get_no_kafka_settings_or_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks open no Kafka client; the SASL password and its file stay out of mpirun's
    environment and out of the variables exported to ranks on other nodes (issue 16)."""
    from pathlib import Path

    from launcher.layout import BundleInfo, NodeAddress, plan
    from launcher.mpirun import GangLaunch

    monkeypatch.setenv("FRAMESTREAM_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("FRAMESTREAM_KAFKA_SASL_PASSWORD_FILE", "/etc/fs/kafka.pw")
    monkeypatch.setenv("FRAMESTREAM_SERVE_MAX_BATCH", "64")  # a rank's own setting still goes
    env = mpi_env()
    assert not [k for k in env if k.startswith("FRAMESTREAM_KAFKA_")]
    assert env["FRAMESTREAM_SERVE_MAX_BATCH"] == "64"
    head, node = NodeAddress("10.1.0.1", "br0", "10.1.0.0/24"), NodeAddress("10.1.0.2", "eth0",
                                                                          "10.1.0.0/24")
    lay = plan([BundleInfo(0, "a", head, "h", ()), BundleInfo(1, "b", node, "n", ())], head,
               rsh_agent="/x/agent")
    launch = GangLaunch(lay, Path("/tmp/hf"))
    exported = [c for c in launch.command("mpi_workers.serve")]
    assert not [c for c in exported if "KAFKA" in c] and "s3cret" not in " ".join(exported)
    assert "FRAMESTREAM_SERVE_MAX_BATCH" in exported
    assert not [k for k in launch.env() if k.startswith("FRAMESTREAM_KAFKA_")]
