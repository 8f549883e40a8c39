"""Pure checks of the security settings: the bind policy, key files, the per-frame decode clock,
Kafka security passthrough, the driver refusing a promoted version whose checksum fails."""

from __future__ import annotations

import json
import signal
import time
import zlib
from pathlib import Path

import pytest

from etl.decode import FrameLimits, FrameRejected, Reason, decode_batch, decode_one
from etl.time_limit import FrameClock, TimeLimitExceeded
from framestream import hostile
from framestream import keys as keys_cli
from framestream.config import KafkaSettings
from framestream.errors import ConfigError
from framestream.security import InsecureBind, client_keys, is_loopback, server_keys
from models.spec import PreprocessSpec


@pytest.mark.parametrize("host, local", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("*", False), ("::", False), ("10.1.2.3", False),
    ("192.168.0.7", False), ("eth0", False), ("no-such-host.invalid", False)])
def test_which_bind_addresses_count_as_loopback(host: str, local: bool) -> None:
    assert is_loopback(host) is local


def test_bind_policy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert server_keys("127.0.0.1", "", "", False) is None
    with pytest.raises(InsecureBind) as err:
        server_keys("10.0.0.5", "", "", False)
    assert "FRAMESTREAM_SERVE_BIND" in str(err.value) and "--insecure" in str(err.value)
    assert "python -m framestream.keys" in str(err.value)
    assert server_keys("10.0.0.5", "", "", True) is None
    assert "WITHOUT authentication" in caplog.text
    keys_cli.init(tmp_path, ["executors"])
    got = server_keys("10.0.0.5", str(tmp_path / "server.key_secret"), str(tmp_path / "clients"),
                      False)
    assert got is not None and got.clients == ("executors.key",) and len(got.public) == 40
    for secret, clients, setting in [
            (str(tmp_path / "server.key_secret"), "", "FRAMESTREAM_SERVE_CURVE_CLIENTS"),
            ("", str(tmp_path / "clients"), "FRAMESTREAM_SERVE_CURVE_SECRET"),
            (str(tmp_path / "server.key"), str(tmp_path / "clients"),  # public, not secret
             "FRAMESTREAM_SERVE_CURVE_SECRET"),
            (str(tmp_path / "server.key_secret"), str(tmp_path / "nowhere"),
             "FRAMESTREAM_SERVE_CURVE_CLIENTS")]:
        with pytest.raises(ConfigError, match=setting):
            server_keys("127.0.0.1", secret, clients, False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="at least one client"):
        server_keys("127.0.0.1", str(tmp_path / "server.key_secret"), str(tmp_path / "empty"),
                    False)


def test_client_keys_come_in_pairs(tmp_path: Path) -> None:
    keys_cli.init(tmp_path, ["executors"])
    assert client_keys("", "") is None
    with pytest.raises(ConfigError, match="FRAMESTREAM_CLIENT_CURVE_SERVER_KEY"):
        client_keys(str(tmp_path / "executors.key_secret"), "")
    with pytest.raises(ConfigError, match="FRAMESTREAM_CLIENT_CURVE_SECRET"):
        client_keys("", str(tmp_path / "server.key"))
    got = client_keys(str(tmp_path / "executors.key_secret"), str(tmp_path / "server.key"))
    assert got is not None and got.server != got.public


def test_key_cli_add_and_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keys_cli.main(["init", str(tmp_path)]) == 0
    assert keys_cli.main(["add-client", str(tmp_path), "cam-gateway"]) == 0
    assert sorted(p.name for p in (tmp_path / "clients").iterdir()) == [
        "cam-gateway.key", "executors.key"]
    assert keys_cli.main(["add-client", str(tmp_path), "cam-gateway"]) == 1  # never overwrite
    assert keys_cli.main(["revoke", str(tmp_path), "cam-gateway"]) == 0
    assert [p.name for p in (tmp_path / "clients").iterdir()] == ["executors.key"]
    assert keys_cli.main(["add-client", str(tmp_path), "../evil"]) == 1
    assert "FRAMESTREAM_CLIENT_CURVE_SECRET" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# the decode clock


def _slow_png() -> bytes:
    """A valid 6000 x 6000 black PNG (36 M pixels, under max_pixels): ~0.1-0.5 s to decode."""
    return hostile.png_from_header(6000, 6000, zlib.compress(b"\0" * (6001 * 6000), 9))


def test_a_frame_over_the_decode_timeout_is_rejected_and_the_next_one_decodes() -> None:
    spec = PreprocessSpec()
    limits = FrameLimits(decode_timeout_s=0.02)
    good = hostile.png_gray8().data
    started = time.monotonic()
    batch = decode_batch([_slow_png(), good, _slow_png(), good], spec, limits)
    assert batch.ok_index.tolist() == [1, 3]
    assert batch.reasons == [Reason.TIMEOUT.value] * 2
    assert "FRAMESTREAM_LIMITS_DECODE_TIMEOUT_S" in batch.details[0]
    assert time.monotonic() - started < 5
    with pytest.raises(FrameRejected) as err:
        decode_one(_slow_png(), spec, limits)
    assert err.value.reason is Reason.TIMEOUT
    assert decode_one(_slow_png(), spec, FrameLimits(decode_timeout_s=0)).shape == spec.shape


def test_decode_timeout_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FrameLimits().decode_timeout_s == 10.0
    monkeypatch.setenv("FRAMESTREAM_LIMITS_DECODE_TIMEOUT_S", "2.5")
    assert FrameLimits.load().decode_timeout_s == 2.5
    monkeypatch.setenv("FRAMESTREAM_LIMITS_DECODE_TIMEOUT_S", "-1")
    with pytest.raises(ConfigError, match="FRAMESTREAM_LIMITS_DECODE_TIMEOUT_S"):
        FrameLimits.load()


def test_the_clock_counts_cpu_time_not_the_moment() -> None:
    """A stalled or loaded machine (here: a sleep) is not the frame's fault; work is."""
    with FrameClock(0.05) as clock:
        assert clock.active
        clock.arm()
        try:
            time.sleep(0.3)  # six times the limit on the wall clock, no CPU: no timeout
        finally:
            clock.disarm()
        clock.arm()
        with pytest.raises(TimeLimitExceeded):
            while True:
                sum(range(1000))  # busy: the CPU timer interrupts this
        clock.disarm()


def test_the_clock_leaves_alarms_alone_and_ignores_late_ones() -> None:
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(time.monotonic()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 2.0)  # someone's watchdog (pytest-timeout)
        # 2 s of wall time: ample for 0.05 s of this process's CPU even on a loaded machine
        started = time.monotonic()
        with FrameClock(0.05) as clock:
            clock.arm()
            with pytest.raises(TimeLimitExceeded):
                while True:
                    sum(range(1000))
            clock.disarm()
            clock.arm()
            clock.disarm()  # armed and disarmed in time: nothing fires
        assert signal.getsignal(signal.SIGPROF) is not clock._on_alarm
        assert signal.getsignal(signal.SIGALRM) is not clock._on_alarm
        assert signal.getitimer(signal.ITIMER_PROF)[0] == 0
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0 < remaining < 2.0
        while not fired and time.monotonic() - started < 10:
            time.sleep(0.01)  # wait for the outer alarm, which must still come
        assert fired and 1.9 < fired[0] - started < 8.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    profiler = signal.signal(signal.SIGPROF, lambda *_: None)
    try:
        signal.setitimer(signal.ITIMER_PROF, 30.0)  # a sampling profiler's timer
        with FrameClock(1.0) as clock:  # stays off rather than fight it
            assert not clock.active
        assert signal.getitimer(signal.ITIMER_PROF)[0] > 0
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, profiler)


# ---------------------------------------------------------------------------------------------
# Kafka security passthrough


def test_kafka_security_reaches_every_client(tmp_path: Path) -> None:
    plain = KafkaSettings()
    assert plain.security_options() == {"security_protocol": "PLAINTEXT"}
    assert plain.spark_options() == {"kafka.bootstrap.servers": "127.0.0.1:9092",
                                     "kafka.security.protocol": "PLAINTEXT"}
    (tmp_path / "pw").write_text("s3cr\"et\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "me.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    k = KafkaSettings.load(env={
        "FRAMESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FRAMESTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "FRAMESTREAM_KAFKA_SASL_USERNAME": "stream",
        "FRAMESTREAM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw"),
        "FRAMESTREAM_KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
        "FRAMESTREAM_KAFKA_SSL_KEYSTORE": str(tmp_path / "me.pem")})
    assert k.security_options() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "stream", "sasl_plain_password": 's3cr"et',
        "ssl_check_hostname": True, "ssl_cafile": str(tmp_path / "ca.pem"),
        "ssl_certfile": str(tmp_path / "me.pem")}
    spark = k.spark_options()
    assert spark["kafka.security.protocol"] == "SASL_SSL"
    assert spark["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert spark["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="stream" '
        'password="s3cr\\"et";')
    assert spark["kafka.ssl.truststore.type"] == "PEM"
    assert spark["kafka.ssl.keystore.location"] == str(tmp_path / "me.pem")
    assert "s3cr" not in repr(k)  # the password never reaches a log line through repr

    from etl.stream import kafka_sink_options

    sink = kafka_sink_options(k)
    assert sink["kafka.sasl.jaas.config"] == spark["kafka.sasl.jaas.config"]
    assert sink["kafka.acks"] == "all"


@pytest.mark.parametrize("env, setting", [
    ({"FRAMESTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "FRAMESTREAM_KAFKA_SECURITY_PROTOCOL"),
    ({"FRAMESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
     "FRAMESTREAM_KAFKA_SASL_MECHANISM"),
    ({"FRAMESTREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "FRAMESTREAM_KAFKA_SASL_MECHANISM"),
    ({"FRAMESTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", "FRAMESTREAM_KAFKA_SSL_CAFILE": "/nope.pem"},
     "FRAMESTREAM_KAFKA_SSL_CAFILE")])
def test_bad_kafka_security_names_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        KafkaSettings.load(env=env)


# ---------------------------------------------------------------------------------------------
# the driver never pins a version whose weights fail their checksum


def test_driver_stays_on_the_last_good_version_when_a_bad_one_is_promoted(tmp_path: Path) -> None:
    import torch

    from etl.client import ClientSettings
    from etl.stream import ClassifyBatches, StreamSettings
    from models.nets import DEFAULT_SPECS, build
    from models.registry import Registry

    registry = Registry(tmp_path / "registry")

    def publish(seed: int) -> str:
        torch.manual_seed(seed)
        return registry.publish(build("fashion_cnn"), net="fashion_cnn", net_kwargs={},
                                spec=DEFAULT_SPECS["fashion_cnn"],
                                metrics={"holdout_accuracy": 0.5, "holdout": "t"}, parent=None,
                                backend="none", world_size=1, data={}).version

    v1, v2, v3 = publish(1), publish(2), publish(3)
    assert registry.promote(v1).promoted
    fn = ClassifyBatches(StreamSettings(checkpoint=str(tmp_path / "ck"), registry=str(registry.root),
                                        endpoints_file=str(tmp_path / "ep.json")),
                         KafkaSettings(), ClientSettings(), None, {}, {})
    assert fn.choose_version() == v1
    weights = registry.root / v2 / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # bit rot after the checksum was taken
    weights.write_bytes(bytes(data))
    serving = json.loads((registry.root / "serving.json").read_text())
    (registry.root / "serving.json").write_text(json.dumps({**serving, "version": v2}))
    assert registry.serving() == v2
    assert fn.choose_version() == v1  # refused: the batch stays on v1
    assert fn.choose_version() == v1  # checked once per file state, still refused
    assert registry.promote(v3, force=True).promoted
    assert fn.choose_version() == v3  # a good promotion after it is followed
