"""The status page in a real browser (headless Chromium) over a real stream: Kafka ->
spark-submit jobs/stream_classify.py --ranks 2 --status-port 0 (the page runs in the driver) ->
ZeroMQ -> mpirun ranks, with corrupt frames, a promotion in the middle, one real retraining run
of the cron (``python -m jobs.retrain_cron --once``) and a rank killed at the end. What the page
shows must equal what is read back from the topics, the ranks' metrics and the cron's log; its
link to Spark's UI must be the driver's and answer; nothing overflows at 1400 or 1000 px. The
screenshots land in the test's tmp folder (status-page.png, status-page-1000.png,
status-page-after-kill.png) with the page's JSON (status.json)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from etl.pins import VersionPins
from framestream import results, web_uis
from framestream.hostile import hostile_mix
from framestream.producer import fashion_frames, mix_in, publish_frames
from models.registry import Registry
from framestream.paths import REPO
from tests.status.browser import chrome, overflowing, resize, table, text, wait_page
from tests.stream.helpers import start_stream, stop_stream, wait_until
from tests.helpers.registry import publish_random

pytestmark = [pytest.mark.browser, pytest.mark.spark, pytest.mark.kafka, pytest.mark.mpi,
              pytest.mark.slow, pytest.mark.ray]
HALF = 150


def number(s: str) -> int:
    return int(s.replace(",", "")) if s.replace(",", "").isdigit() else -1


def answered(bootstrap: str, topics: dict[str, str]) -> int:
    return sum(sum(results.end_offsets(bootstrap, topics[t]).values())
               for t in ("predictions", "dlq"))


def forward_passes(metrics_url: str) -> int:
    """framestream_rank_batch_frames_count, read from the rank's own Prometheus endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        families = text_string_to_metric_families(resp.read().decode())
        return int(sum(s.value for f in families for s in f.samples
                       if s.name == "framestream_rank_batch_frames_count"))


def cron_retrain(tmp_path: Path, registry: Registry) -> dict:
    """One real run of the retraining cron (its own command line: lock, Ray gang, mpirun, runs
    log) on the page's registry and state folder; returns the record it logged."""
    cmd = [sys.executable, "-m", "jobs.retrain_cron", "--once", "--ranks", "1",
           "--state-dir", str(tmp_path / "retrain"), "--",
           "--max-train", "1000", "--epochs", "2", "--holdout-limit", "500", "--backend", "torch",
           "--registry", str(registry.root), "--checkpoint-dir", str(tmp_path / "retrain-ckpt"),
           "--no-progress"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FRAMESTREAM_STATE": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["status"] == "ok" and record["version"], record
    return record


def batch_sizes_shown(driver) -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
    """rank -> {size range: forward passes} from the ranks table's bar charts."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#ranks tbody tr')].map(tr => [tr.dataset.rank, "
        "tr.querySelector('.batch-sizes')?.dataset.sizes ?? '{}']);")
    return {rank: json.loads(sizes) for rank, sizes in rows}


@pytest.mark.timeout(600)
def test_page_shows_the_stream_as_the_topics_hold_it(kafka_bootstrap, new_topic,
                                                     tmp_path: Path) -> None:
    topics = {"frames": new_topic(4, "frames"), "predictions": new_topic(4, "predictions"),
              "dlq": new_topic(4, "dlq")}
    registry = Registry(tmp_path / "registry")
    v1 = publish_random(registry, 1, accuracy=0.50)
    assert registry.promote(v1).promoted
    v2 = publish_random(registry, 2, v1, accuracy=0.60)
    hostile = hostile_mix(8, seed=3)
    halves = [[(h.kind, h.data, h.expect.value) for h in hostile[i::2]] for i in (0, 1)]
    endpoints = tmp_path / "ep.json"

    stream = start_stream(
        ["--ranks", "2", "--rank-threads", "1", "--registry", str(registry.root),
         "--bootstrap", kafka_bootstrap, "--topic", topics["frames"],
         "--predictions-topic", topics["predictions"], "--dlq-topic", topics["dlq"],
         "--checkpoint", str(tmp_path / "checkpoint"), "--endpoints", str(endpoints),
         "--max-offsets-per-trigger", "100", "--trigger-interval", "0.2",
         "--request-timeout", "3", "--status-port", "0"], tmp_path / "stream.log",
        env={"FRAMESTREAM_STATE": str(tmp_path), "FRAMESTREAM_STATUS_REFRESH_S": "0.25"})
    driver = chrome()
    url: list[str] = []

    def explain() -> str:
        if not url:
            return ""
        with urllib.request.urlopen(url[0] + "api/status", timeout=10) as resp:
            return "status snapshot: " + resp.read().decode()[:3000]

    def states(d) -> list[str]:  # type: ignore[no-untyped-def]
        return [cells[1] for cells in table(d, "ranks", "rank").values()]

    def ranks_state(d, state: str, generation: int | None = None) -> bool:  # type: ignore
        gen_ok = generation is None or text(d, "#generation") == f"generation {generation}"
        return gen_ok and states(d) == [state, state]

    try:
        wait_until(lambda: bool(url or url.extend(re.findall(
            r"^status page: (\S+)$", (tmp_path / "stream.log").read_text(), re.M))), 120,
            "the stream driver to print its status page's address")
        driver.get(url[0])
        wait_page(driver, lambda d: text(d, "#conn") == "live", 30, "a live connection", explain)
        wait_until(endpoints.exists, 180, "the ranks to publish endpoints")
        wait_page(driver, lambda d: ranks_state(d, "up", 1), 60, "2 ranks up", explain)

        sent = publish_frames(kafka_bootstrap, topics["frames"],
                              mix_in(fashion_frames(HALF), halves[0], HALF, seed=1))
        wait_until(lambda: answered(kafka_bootstrap, topics) >= sent.sent, 180,
                   "the first half answered")
        assert registry.promote(v2).promoted
        sent2 = publish_frames(kafka_bootstrap, topics["frames"],
                               mix_in(fashion_frames(HALF), halves[1], HALF, seed=2))
        total = sent.sent + sent2.sent
        wait_until(lambda: answered(kafka_bootstrap, topics) >= total, 180, "every frame answered")

        preds = results.read_topic(kafka_bootstrap, topics["predictions"])
        dlq = results.read_topic(kafka_bootstrap, topics["dlq"])
        summary = results.summarize(total, preds, dlq)
        assert summary.predictions + summary.dead_letters == total
        want = {"#frames-in": total, "#predictions": len(preds), "#dead-letters": len(dlq)}
        wait_page(driver, lambda d: all(number(text(d, k)) == v for k, v in want.items()), 30,
                  f"the counts read back from the topics {want}", explain)
        assert number(text(driver, "#lag-total")) == 0

        reasons = table(driver, "reasons", "reason")
        assert summary.reasons and len(summary.reasons) >= 2
        for reason, count in summary.reasons.items():
            assert reason in reasons and number(reasons[reason][1]) == count, (reason, reasons)
        shown = table(driver, "last-dead", "x")
        assert shown and len(next(iter(shown.values()))) == 3

        served = {json.loads(r.value)["model_version"] for r in preds}
        assert served == {v1, v2}  # the promotion took over mid-stream
        versions = table(driver, "versions", "version")
        assert set(versions) == served
        assert sum(number(row[1]) for row in versions.values()) == len(preds)
        assert text(driver, "#serving") == v2
        decisions = text(driver, "#decisions")
        assert v1 in decisions and v2 in decisions

        # the model version each micro-batch pinned, as the driver's pins hold it
        pins = VersionPins(tmp_path / "checkpoint" / "framestream-pins")
        ids = sorted(int(p.stem) for p in pins.dir.glob("*.json"))
        want_pins = {str(i): pins.get(i) for i in ids[-12:]}
        wait_page(driver, lambda d: {k: row[1] for k, row in table(d, "pins", "batch").items()}
                  == want_pins, 30, f"the micro-batches' pins {want_pins}", explain)
        if len(ids) <= 12:  # all of them shown: the promotion splits them
            assert set(want_pins.values()) == {v1, v2}

        # each rank's batch sizes: as many forward passes as its own metrics count
        ranks = json.loads(endpoints.read_text())["ranks"]
        passes = {str(r["rank"]): forward_passes(r["metrics"]) for r in ranks}
        assert sum(passes.values()) > 0
        wait_page(driver, lambda d: {k: sum(v.values()) for k, v in batch_sizes_shown(d).items()}
                  == passes, 30, f"batch sizes per rank summing to {passes}", explain)

        # the link to Spark's UI is the driver's own, and it answers
        [spark_ui] = web_uis.announced(tmp_path, web_uis.SPARK_UI)
        assert spark_ui["frames_topic"] == topics["frames"]
        wait_page(driver, lambda d: d.execute_script(
            "return document.querySelector('#links a[data-link=spark_ui]')?.href")
            == spark_ui["url"].rstrip("/") + "/", 30, f"a link to {spark_ui['url']}", explain)
        with urllib.request.urlopen(spark_ui["url"], timeout=10) as resp:
            assert resp.status == 200 and b"Spark" in resp.read()

        # one real cron run: its record, duration, accuracy per epoch and the gate's decision
        run = cron_retrain(tmp_path, registry)
        history = registry.manifest(run["version"]).metrics["history"]
        epochs = " → ".join(f"{h['holdout_accuracy']:.4f}" for h in history)
        assert len(history) == 2
        row = {"status": "ok", "duration": f"{run['duration_s']:.1f} s",
               "gate": "promoted" if run["promoted"] else "kept", "epochs": epochs}
        wait_page(driver, lambda d: d.execute_script(
            "const tr = document.querySelector(`#runs tr[data-version='${arguments[0]}']`);"
            "return tr && {status: tr.cells[1].innerText, duration: tr.cells[2].innerText,"
            " gate: tr.cells[5].innerText, epochs: tr.cells[4].querySelector('title')"
            "?.textContent};", run["version"]) == row, 30, f"the cron's run {row}", explain)

        # nothing overflows its tile or card, wide or narrow
        for width, shot in ((1400, "status-page.png"), (1000, "status-page-1000.png")):
            resize(driver, width)
            wait_page(driver, lambda d: not overflowing(d), 10, f"no overflow at {width} px",
                      lambda: f"overflowing: {overflowing(driver)}")
            resize(driver, width, fit=True)
            driver.save_screenshot(str(tmp_path / shot))
        resize(driver, 1400)
        with urllib.request.urlopen(url[0] + "api/status", timeout=10) as resp:
            (tmp_path / "status.json").write_bytes(resp.read())

        # a killed rank shows as down, then the relaunched gang (generation 2) as up
        os.kill(json.loads(endpoints.read_text())["ranks"][1]["pid"], signal.SIGKILL)
        wait_page(driver, lambda d: "down" in states(d), 60,
                  "a rank down after the kill", explain)
        wait_page(driver, lambda d: ranks_state(d, "up", 2), 180,
                  "the relaunched ranks up (generation 2)", explain)
        driver.save_screenshot(str(tmp_path / "status-page-after-kill.png"))
    finally:
        driver.quit()
        code = stop_stream(stream)
    assert code == 0, (tmp_path / "stream.log").read_text()[-3000:]
    assert not list(web_uis.ui_dir(tmp_path).glob("*.json")), "the driver left its UI announced"
