"""The settings table: defaults, environment overrides, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from framestream.config import BrokerSettings, KafkaSettings
from framestream.errors import ConfigError
from framestream.settings import describe, env_name


def test_defaults() -> None:
    k = KafkaSettings.load(env={})
    assert k.bootstrap == "127.0.0.1:9092" and k.partitions == 4
    assert k.topics() == ("frames", "predictions", "frames.dlq", "labels")


def test_environment_overrides_and_explicit_values_win() -> None:
    env = {"FRAMESTREAM_KAFKA_PARTITIONS": "8", "FRAMESTREAM_KAFKA_BOOTSTRAP": "h1:1,h2:2"}
    assert KafkaSettings.load(env=env).partitions == 8
    assert KafkaSettings.load(env=env).bootstrap == "h1:1,h2:2"
    assert KafkaSettings.load(env=env, partitions=2).partitions == 2


@pytest.mark.parametrize("env, setting", [
    ({"FRAMESTREAM_KAFKA_PARTITIONS": "four"}, "FRAMESTREAM_KAFKA_PARTITIONS"),
    ({"FRAMESTREAM_KAFKA_PARTITIONS": "0"}, "FRAMESTREAM_KAFKA_PARTITIONS"),
    ({"FRAMESTREAM_KAFKA_BOOTSTRAP": "nohostport"}, "FRAMESTREAM_KAFKA_BOOTSTRAP"),
    ({"FRAMESTREAM_KAFKA_REQUEST_TIMEOUT_S": "-1"}, "FRAMESTREAM_KAFKA_REQUEST_TIMEOUT_S"),
])
def test_bad_values_fail_naming_the_setting(env: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        KafkaSettings.load(env=env)
    assert err.value.setting == setting and setting in str(err.value)


def test_bool_and_unknown_keys() -> None:
    from etl.session import SparkSettings

    assert SparkSettings.load(env={"FRAMESTREAM_SPARK_UI": "off"}).ui is False
    with pytest.raises(ConfigError, match="FRAMESTREAM_SPARK_UI"):
        SparkSettings.load(env={"FRAMESTREAM_SPARK_UI": "maybe"})
    with pytest.raises(ConfigError, match="kafka.partitons"):
        KafkaSettings.load(env={}, partitons=3)


def test_describe_lists_every_setting_with_its_env_name() -> None:
    rows = describe(BrokerSettings.load(env={}))
    assert ("FRAMESTREAM_BROKER_PORT", 9092, 9092) in rows
    assert env_name("broker", "heap") == "FRAMESTREAM_BROKER_HEAP"
    kafka = KafkaSettings.load(env={"FRAMESTREAM_KAFKA_SASL_PASSWORD": "hunter2"})
    assert ("FRAMESTREAM_KAFKA_SASL_PASSWORD", "***", "") in describe(kafka)
    assert "hunter2" not in repr(kafka)


def test_path_optional_and_tuple_types_are_parsed(tmp_path: Path) -> None:
    from framestream.settings import Section, section, setting

    class Demo(Section):
        model_config = section("demo")

        where: Path = setting(Path("/x"), "a folder")
        ratio: float | None = setting(None, "a ratio")
        names: tuple[str, ...] = setting(("a",), "names")

    d = Demo.load(env={"FRAMESTREAM_DEMO_WHERE": str(tmp_path), "FRAMESTREAM_DEMO_RATIO": "0.5",
                       "FRAMESTREAM_DEMO_NAMES": "b, c"})
    assert d.where == tmp_path and d.ratio == 0.5 and d.names == ("b", "c")
    assert Demo.load(env={"FRAMESTREAM_DEMO_RATIO": ""}).ratio is None
    assert Demo.load(env={"FRAMESTREAM_DEMO_WHERE": "~/y"}).where == Path.home() / "y"
    with pytest.raises(ConfigError, match="FRAMESTREAM_DEMO_RATIO='half': expected a number"):
        Demo.load(env={"FRAMESTREAM_DEMO_RATIO": "half"})
