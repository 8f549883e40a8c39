"""Entry points' flags are made from the settings: same names, help with default and env var,
flags win over the environment, and a flag not given leaves the environment in charge."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from framestream.config import KafkaSettings
from framestream.errors import ConfigError
from framestream.flags import add_settings, as_argv, from_args, given
from framestream.limits import FrameLimits
from status.settings import StatusSettings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_settings(p, KafkaSettings, "bootstrap", "partitions", "frames_topic", "ssl_check_hostname",
                 aliases={"frames_topic": "--topic"})
    add_settings(p, StatusSettings, "port", "registry", prefix="status-")
    add_settings(p, FrameLimits, "formats")
    return p


def test_help_shows_the_description_default_and_env_var() -> None:
    text = " ".join(_parser().format_help().split())
    assert ("partitions of the topics framestream creates (default 4; "
            "FRAMESTREAM_KAFKA_PARTITIONS)") in text
    assert "--frames-topic FRAMES_TOPIC, --topic FRAMES_TOPIC" in text
    assert "--ssl-check-hostname, --no-ssl-check-hostname" in text
    assert "--status-port" in text and "FRAMESTREAM_STATUS_PORT" in text
    assert "(default JPEG,PNG,WEBP,GIF,BMP,TIFF; FRAMESTREAM_LIMITS_FORMATS)" in text


def test_flags_win_over_the_environment_which_wins_over_defaults(monkeypatch) -> None:
    monkeypatch.setenv("FRAMESTREAM_KAFKA_PARTITIONS", "8")
    monkeypatch.setenv("FRAMESTREAM_KAFKA_FRAMES_TOPIC", "env-frames")
    a = _parser().parse_args(["--topic", "cli-frames", "--no-ssl-check-hostname",
                              "--formats", "jpeg, png", "--status-registry", "/r"])
    kafka = from_args(a, KafkaSettings)
    assert kafka.frames_topic == "cli-frames" and kafka.partitions == 8
    assert kafka.ssl_check_hostname is False and kafka.bootstrap == "127.0.0.1:9092"
    assert from_args(a, FrameLimits).formats == ("JPEG", "PNG")
    assert from_args(a, StatusSettings).registry == Path("/r")
    assert given(a, StatusSettings) == {"registry": "/r"}


def test_a_bad_flag_value_names_the_setting() -> None:
    a = _parser().parse_args(["--partitions", "0"])
    with pytest.raises(ConfigError, match="FRAMESTREAM_KAFKA_PARTITIONS=0: expected 1..1024"):
        from_args(a, KafkaSettings)
    with pytest.raises(SystemExit):  # argparse's own usage error for a non-number
        _parser().parse_args(["--partitions", "four"])


def test_unknown_settings_are_refused_when_flags_are_made() -> None:
    with pytest.raises(KeyError):
        add_settings(argparse.ArgumentParser(), KafkaSettings, "partitons")


def test_stream_job_flags_reach_its_settings_and_its_ranks(tmp_path: Path) -> None:
    from jobs.stream_classify import parse
    from mpi_workers.serve import parse_args as serve_args

    endpoints = tmp_path / "endpoints.json"
    job, status = parse(["--ranks", "2", "--endpoints", str(endpoints), "--credits", "3",
                         "--request-timeout", "7", "--topic", "f2", "--trigger-interval", "0.25",
                         "--max-batch", "64", "--rank-threads", "1", "--status-port", "0"])
    assert job.stream.endpoints_file == str(endpoints) and job.stream.trigger_s == 0.25
    assert job.client.credits_per_rank == 3 and job.client.request_timeout_s == 7.0
    assert job.kafka.frames_topic == "f2"
    assert status is not None and status.port == 0 and status.endpoints_file == endpoints
    settings, _ = serve_args(job.serve_args)  # the ranks parse what the job passes them
    assert settings.max_batch == 64 and settings.threads == 1


def test_stream_job_without_ranks_or_endpoints_is_a_usage_error(capsys) -> None:
    from jobs.stream_classify import main

    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2 and "--ranks N" in capsys.readouterr().err


def test_as_argv_round_trips_booleans() -> None:
    p = argparse.ArgumentParser()
    add_settings(p, KafkaSettings, "ssl_check_hostname", "bootstrap")
    argv = as_argv(KafkaSettings, {"ssl_check_hostname": False, "bootstrap": "h:1"})
    assert argv == ["--no-ssl-check-hostname", "--bootstrap", "h:1"]
    assert from_args(p.parse_args(argv), KafkaSettings).ssl_check_hostname is False


@pytest.mark.parametrize("module, argv", [
    ("jobs.produce", ["--topic", "t", "--deadline", "5", "--format", "jpeg"]),
    ("mpi_workers.train", ["--epochs", "2", "--timeout", "9", "--feed-timeout", "3", "--resume"]),
])
def test_other_entry_points_keep_their_flags(module: str, argv: list[str]) -> None:
    import importlib

    mod = importlib.import_module(module)
    if module == "jobs.produce":
        from framestream.producer import ProducerSettings

        a = mod.parse_args(argv)
        assert from_args(a, KafkaSettings).frames_topic == "t"
        s = from_args(a, ProducerSettings)
        assert s.deadline_s == 5.0 and s.format == "jpeg"
    else:
        settings, opts = mod.parse_args(argv)
        assert settings.epochs == 2 and settings.timeout_s == 9.0 and settings.feed_timeout_s == 3.0
        assert opts.resume is True and opts.promote is True


def test_launcher_flags(tmp_path: Path, monkeypatch, capsys) -> None:
    from launcher.__main__ import main

    monkeypatch.setenv("FRAMESTREAM_STATE", str(tmp_path))
    assert main(["status", "--json"]) == 0 and '"gangs": []' in capsys.readouterr().out
    assert main(["serve", "--ranks", "0"]) == 2  # before Ray is touched
    assert "FRAMESTREAM_LAUNCHER_RANKS=0" in capsys.readouterr().err
