"""From reserved bundles to mpirun: hostfile, rank order, per-rank environment, MCA, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framestream.errors import ConfigError
from launcher.layout import RANK_ENV, BundleInfo, NodeAddress, plan
from launcher.mpirun import GangLaunch
from launcher.rank_exec import pick
from launcher.settings import LauncherSettings

HEAD = NodeAddress("10.1.0.1", "br0", "10.1.0.0/24")
NODE1 = NodeAddress("10.1.0.2", "eth0", "10.1.0.0/24")


def bundle(i: int, where: NodeAddress, gpus: tuple[str, ...] = ()) -> BundleInfo:
    return BundleInfo(i, f"node-{where.ip}", where, f"host-{where.ip}", gpus)


def test_one_node_next_to_the_launcher_stays_on_loopback_defaults() -> None:
    lay = plan([bundle(0, HEAD), bundle(1, HEAD)], HEAD, rsh_agent="/x/agent")
    assert lay.hostfile_text() == "10.1.0.1 slots=2\n"
    assert lay.rank_bundles == (0, 1) and lay.rank_hosts() == ["10.1.0.1", "10.1.0.1"]
    assert lay.mca == {} and not lay.remote
    assert lay.rank_env[1] == {"CUDA_VISIBLE_DEVICES": "", "FRAMESTREAM_GANG_BUNDLE": "1",
                               "FRAMESTREAM_GANG_NODE_IP": "10.1.0.1"}
    assert json.loads(lay.env[RANK_ENV]) == {"10.1.0.1": list(lay.rank_env)}


def test_two_nodes_put_the_launchers_node_first_and_reach_the_other_through_the_agent() -> None:
    lay = plan([bundle(0, NODE1), bundle(1, HEAD), bundle(2, NODE1)], HEAD, rsh_agent="/x/agent")
    assert lay.hostfile_text() == "10.1.0.1 slots=1\n10.1.0.2 slots=2\n"
    assert lay.rank_bundles == (1, 0, 2)
    assert lay.rank_hosts() == ["10.1.0.1", "10.1.0.2", "10.1.0.2"]
    assert lay.mca == {"plm_rsh_agent": "/x/agent", "plm_rsh_no_tree_spawn": "1",
                       "oob_tcp_if_include": "10.1.0.0/24", "btl_tcp_if_include": "10.1.0.0/24"}
    remote_rank = lay.rank_env[1]
    assert remote_rank["FRAMESTREAM_SERVE_BIND"] == "10.1.0.2"  # reachable, not 127.0.0.1
    assert remote_rank["GLOO_SOCKET_IFNAME"] == "eth0" and remote_rank["NCCL_SOCKET_IFNAME"] == "eth0"
    assert remote_rank["FRAMESTREAM_MPI_RENDEZVOUS_HOST"] == "10.1.0.2"
    assert lay.rank_env[0]["GLOO_SOCKET_IFNAME"] == "br0"
    table = json.loads(lay.env[RANK_ENV])
    assert [r["FRAMESTREAM_GANG_BUNDLE"] for r in table["10.1.0.2"]] == ["0", "2"]


def test_a_gang_entirely_on_another_node_still_binds_there() -> None:
    lay = plan([bundle(0, NODE1)], HEAD, rsh_agent=None)
    assert lay.remote and "plm_rsh_agent" not in lay.mca  # OpenMPI's own default (ssh)
    assert lay.rank_env[0]["FRAMESTREAM_SERVE_BIND"] == "10.1.0.2"
    assert "FRAMESTREAM_MPI_RENDEZVOUS_HOST" not in lay.rank_env[0]  # one host: loopback is fine


def test_subnets_that_differ_leave_the_interfaces_to_openmpi_unless_set() -> None:
    other = NodeAddress("10.9.0.5", "eth1", "10.9.0.0/16")
    lay = plan([bundle(0, HEAD), bundle(1, other)], HEAD, rsh_agent="a")
    assert "btl_tcp_if_include" not in lay.mca
    lay = plan([bundle(0, HEAD), bundle(1, other)], HEAD, rsh_agent="a", if_include="10.0.0.0/8")
    assert lay.mca["oob_tcp_if_include"] == "10.0.0.0/8"


def test_gpus_come_from_the_bundle_and_explicit_settings_win() -> None:
    lay = plan([bundle(0, HEAD, ("2", "3")), bundle(1, NODE1, ("0",))], HEAD, rsh_agent="a",
               environ={"FRAMESTREAM_SERVE_BIND": "0.0.0.0"})
    assert [e["CUDA_VISIBLE_DEVICES"] for e in lay.rank_env] == ["2,3", "0"]
    assert all("FRAMESTREAM_SERVE_BIND" not in e for e in lay.rank_env)


def test_an_empty_gang_is_refused() -> None:
    with pytest.raises(ValueError):
        plan([], HEAD)


def test_a_rank_finds_its_row_by_node_address_and_local_rank() -> None:
    table = {"10.1.0.1": [{"A": "h0"}], "10.1.0.2": [{"A": "n0"}, {"A": "n1"}]}
    assert pick(table, {"127.0.0.1", "10.1.0.2"}, 1) == {"A": "n1"}
    assert pick(table, {"10.1.0.1"}, 0) == {"A": "h0"}
    with pytest.raises(RuntimeError, match="holds 1 bundles"):
        pick(table, {"10.1.0.1"}, 1)
    with pytest.raises(RuntimeError, match="holds none of the gang's bundles"):
        pick(table, {"192.168.1.1"}, 0)
    assert pick({"10.1.0.1": [{"A": "x"}]}, {"172.17.0.2"}, 0) == {"A": "x"}  # one node, NAT


def test_the_mpirun_command_runs_each_rank_through_rank_exec_on_the_hostfile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    lay = plan([bundle(0, HEAD), bundle(1, NODE1)], HEAD, rsh_agent="/x/agent")
    launch = GangLaunch(lay, Path("/tmp/hf"))
    cmd = launch.command("mpi_workers.selfcheck", ["--flag"], python="/py")
    assert cmd[1:3] == ["-n", "2"] and cmd[cmd.index("--hostfile") + 1] == "/tmp/hf"
    assert cmd[cmd.index("--map-by") + 1] == "slot" and "--oversubscribe" not in cmd
    assert cmd[-5:] == ["/py", "-m", "launcher.rank_exec", "mpi_workers.selfcheck", "--flag"]
    exported = [cmd[i + 1] for i, c in enumerate(cmd) if c == "-x"]
    # ranks import the installed project: no checkout path handed to them, here or remotely
    assert RANK_ENV in exported and "PYTHONPATH" not in exported
    assert launch.env()[RANK_ENV] == lay.env[RANK_ENV] and "PYTHONPATH" not in launch.env()
    monkeypatch.setenv("PYTHONPATH", "/users/own")  # a user's own is passed on as it is
    exported = [c for c in launch.command("m") if c == "PYTHONPATH"]
    assert exported == ["PYTHONPATH"] and launch.env()["PYTHONPATH"] == "/users/own"


def test_settings_make_the_bundle_and_name_bad_values() -> None:
    s = LauncherSettings.load(env={}, cpus_per_rank=2, gpus_per_rank=1,
                              resources_per_rank="fs_node1=1")
    assert s.bundle() == {"CPU": 2.0, "GPU": 1.0, "fs_node1": 1.0}
    assert LauncherSettings.load(env={}).bundle() == {"CPU": 1.0}
    with pytest.raises(ConfigError, match="FRAMESTREAM_LAUNCHER_STRATEGY"):
        LauncherSettings.load(env={"FRAMESTREAM_LAUNCHER_STRATEGY": "SCATTER"})
    with pytest.raises(ConfigError, match="FRAMESTREAM_LAUNCHER_RESOURCES_PER_RANK"):
        LauncherSettings.load(env={}, resources_per_rank="fs_node1")
    with pytest.raises(ConfigError, match="FRAMESTREAM_LAUNCHER_TIMEOUT_S"):
        LauncherSettings.load(env={"FRAMESTREAM_LAUNCHER_TIMEOUT_S": "0"})
