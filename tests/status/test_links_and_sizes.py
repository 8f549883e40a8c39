"""Unit tier (no browser): the links the page finds by itself, shown only while they answer, each
rank's batch-size distribution read from its real Prometheus histogram, and the micro-batches'
pinned versions as the driver's own pin code writes them."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from etl.pins import VersionPins
from framestream import web_uis
from status.files import RankWatch, batch_sizes, pins_view
from status.links import LinkWatch


@contextmanager
def http_server() -> Iterator[str]:
    """A real HTTP server on a free loopback port that answers every GET (a stand-in UI)."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ui")

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_an_announced_spark_ui_is_linked_while_it_answers_and_only_for_its_topic(
        tmp_path: Path) -> None:
    with http_server() as url:
        record = web_uis.announce(web_uis.SPARK_UI, url, tmp_path, frames_topic="frames-a")
        web_uis.announce("other_ui", url + "/other", tmp_path)
        watch = LinkWatch(tmp_path, "frames-a", timeout=2, every_s=5)
        view = watch.view(0.0)
        assert view["spark_ui"] == url and "ray_dashboard" not in view
        assert [c["source"].startswith("stream driver pid") for c in view["checked"]] == [True]
        # another stream's page in the same state folder does not link to this driver's UI
        assert "spark_ui" not in LinkWatch(tmp_path, "frames-b", timeout=2).view(0.0)
    # the UI went away: gone from the page once the next probe is due, not before
    assert watch.view(1.0)["spark_ui"] == url
    gone = watch.view(6.0)
    assert "spark_ui" not in gone and gone["checked"][0]["up"] is False
    web_uis.withdraw(record)
    assert watch.view(20.0)["checked"] == []


def test_a_record_of_a_process_that_is_gone_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=60)
    path = web_uis.announce(web_uis.SPARK_UI, "http://127.0.0.1:4040", tmp_path)
    assert path is not None and web_uis.announced(tmp_path)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "pid": int(dead.stdout)}))
    assert web_uis.announced(tmp_path) == []
    assert web_uis.announce(web_uis.SPARK_UI, "", tmp_path) is None  # Spark's UI is off


def test_rays_dashboard_from_a_launcher_record_and_the_setting_first(tmp_path: Path) -> None:
    with http_server() as dashboard, http_server() as fixed:
        gangs = tmp_path / "gangs"
        gangs.mkdir()
        (gangs / "stream-1.json").write_text(json.dumps({"name": "stream-1", "dashboard":
                                                         dashboard.removeprefix("http://")}))
        (gangs / "retrain-2.json").write_text("{torn")  # being replaced right now
        assert LinkWatch(tmp_path, "f").view(0.0)["ray_dashboard"] == dashboard
        assert LinkWatch(tmp_path, "f", ray_dashboard=fixed).view(0.0)["ray_dashboard"] == fixed
    # a dashboard that does not answer is not linked
    view = LinkWatch(tmp_path, "f", timeout=1).view(0.0)
    assert "ray_dashboard" not in view and view["checked"][0]["said"]


def test_batch_sizes_per_rank_come_from_its_histogram(tmp_path: Path) -> None:
    from mpi_workers.metrics import RankMetrics

    metrics = RankMetrics(0)
    for n in (1, 1, 7, 32, 33, 256, 2000):
        metrics.batch_frames.observe(n)
    url = metrics.serve("127.0.0.1", 0)
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"generation": 1, "ranks": [
        {"rank": 0, "host": "h", "pid": 1, "device": "cpu", "metrics": url}]}))
    [rank] = RankWatch(path, timeout=2).view(0.0)["ranks"]
    sizes = {(b["lo"], b["hi"]): b["n"] for b in rank["batch_sizes"]}
    assert sizes == {(1, 1): 2, (2, 5): 0, (6, 10): 1, (11, 20): 0, (21, 32): 1, (33, 64): 1,
                     (65, 128): 0, (129, 256): 1, (257, 512): 0, (513, 1024): 0,
                     (1025, None): 1}
    assert sum(sizes.values()) == 7 and rank["mean_batch"] == (2 + 7 + 32 + 33 + 256 + 2000) / 7
    assert batch_sizes({}) == []


def test_the_last_micro_batches_pinned_versions_newest_first(tmp_path: Path) -> None:
    pins = VersionPins(tmp_path / "framestream-pins")
    for batch in range(15):
        pins.pin(batch, lambda b=batch: "v0001" if b < 9 else "v0002")
    (pins.dir / "000000000099.json").write_text("{torn")  # being written right now
    view = pins_view(pins.dir, n=5)
    assert [(b["batch_id"], b["model_version"]) for b in view["batches"]] == [
        (14, "v0002"), (13, "v0002"), (12, "v0002"), (11, "v0002")]
    assert pins_view(tmp_path / "none")["batches"] == []
