"""Every Kafka client framestream makes carries the FRAMESTREAM_KAFKA_* security settings.

Issue 16 found clients (results.py, kafka_admin.py, the doctor) that connected without them; the
old unit test only checked the option builders. This one reads the product code: kafka-python
clients are made only in framestream/kafka_clients.py, and every Spark Kafka source/sink takes
its options from KafkaSettings.spark_options (directly or through etl.stream.kafka_sink_options).
The real proof is tests/multinode/test_kafka_cluster.py against a SASL_SSL cluster.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from framestream import kafka_clients
from framestream.config import KafkaSettings

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("framestream", "models", "etl", "mpi_workers", "launcher", "status", "jobs", "stack")
FACTORY = REPO / "framestream" / "kafka_clients.py"
CLIENT = re.compile(r"\b(KafkaProducer|KafkaConsumer|KafkaAdminClient)\s*\(")
SPARK_KAFKA = re.compile(r"""\.format\(\s*["']kafka["']\s*\)""")
SPARK_SECURED = re.compile(r"spark_options\(\)|kafka_options\b|kafka_sink_options\(")


def product_files() -> list[Path]:
    files = [p for d in PRODUCT for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 50, "the product folders moved: update PRODUCT"
    return files


def client_sites(text: str) -> list[int]:
    return [text.count("\n", 0, m.start()) + 1 for m in CLIENT.finditer(text)]


def unsecured_spark_sites(text: str) -> list[int]:
    """Lines of ``.format("kafka")`` whose statement (up to the next blank line or 4 lines)
    does not take the options from KafkaSettings.spark_options."""
    lines = text.splitlines()
    bad = []
    for m in SPARK_KAFKA.finditer(text):
        at = text.count("\n", 0, m.start())
        statement = "\n".join(lines[at:at + 4])
        if not SPARK_SECURED.search(statement):
            bad.append(at + 1)
    return bad


def test_kafka_python_clients_are_made_only_by_the_factory() -> None:
    found = {str(p.relative_to(REPO)): client_sites(p.read_text())
             for p in product_files() if p != FACTORY}
    offenders = {f: lines for f, lines in found.items() if lines}
    assert not offenders, (f"Kafka clients constructed outside framestream/kafka_clients.py "
                           f"(they would miss the security settings): {offenders}; use "
                           f"kafka_clients.producer/consumer/admin")
    assert len(client_sites(FACTORY.read_text())) == 3


def test_spark_kafka_sources_and_sinks_take_spark_options() -> None:
    offenders = {str(p.relative_to(REPO)): unsecured_spark_sites(p.read_text())
                 for p in product_files() if p.name != "config.py"}  # spark_options itself
    offenders = {f: lines for f, lines in offenders.items() if lines}
    assert not offenders, (f"Spark Kafka source/sink without KafkaSettings.spark_options(): "
                           f"{offenders}")
    for p in product_files():
        if p.name != "config.py":
            assert '"kafka.bootstrap.servers"' not in p.read_text(), \
                f"{p}: set servers through KafkaSettings.spark_options(), with the security"


def test_the_site_checks_catch_a_bare_client() -> None:
    """The two scans above are only worth something if they see the old, bare constructions."""
    old_results = ("consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,\n"
                   "                         group_id=None, consumer_timeout_ms=1000)\n")
    assert client_sites(old_results) == [1]
    old_doctor = ('rows = (spark.read.format("kafka").option("kafka.bootstrap.servers", b)\n'
                  '        .option("subscribe", t).load().count())\n')
    assert unsecured_spark_sites(old_doctor) == [1]


@pytest.fixture
def sasl_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    for name, value in {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "SCRAM-SHA-512",
                        "SASL_USERNAME": "framestream", "SASL_PASSWORD_FILE": str(secret),
                        "SSL_CAFILE": str(ca)}.items():
        monkeypatch.setenv(f"FRAMESTREAM_KAFKA_{name}", value)
    return secret


def test_a_bare_bootstrap_string_gets_the_process_security_settings(sasl_env: Path) -> None:
    opts = kafka_clients._options("10.0.0.2:9094", {"group_id": None})
    assert opts["bootstrap_servers"] == "10.0.0.2:9094"
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "framestream"
    assert opts["sasl_plain_password"] == "s3cret"
    assert opts["ssl_cafile"].endswith("ca.pem")
    assert opts["group_id"] is None


def test_explicit_settings_win_over_the_environment(sasl_env: Path) -> None:
    # a settings object is used as it is: what it says explicitly beats FRAMESTREAM_KAFKA_*
    # (pydantic-settings fills only the fields not given from the environment)
    opts = kafka_clients._options(KafkaSettings(bootstrap="127.0.0.1:9092",
                                                security_protocol="PLAINTEXT"), {})
    assert opts == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


def test_a_call_site_cannot_override_security(sasl_env: Path) -> None:
    with pytest.raises(TypeError, match="security_protocol"):
        kafka_clients._options("10.0.0.2:9094", {"security_protocol": "PLAINTEXT"})
