"""Links to Spark's UI and Ray's dashboard, found by themselves and shown only while they answer.

Where the addresses come from, first found first:

- Spark's UI: ``FRAMESTREAM_STATUS_SPARK_UI`` / ``--spark-ui``; else what a stream driver of this
  page's ``frames`` topic announced in ``<state>/ui/`` (framestream/web_uis.py: the driver's
  ``spark.sparkContext.uiWebUrl``).
- Ray's dashboard: ``FRAMESTREAM_STATUS_RAY_DASHBOARD`` / ``--ray-dashboard``; else the dashboard
  that Ray reported to a launcher of this state folder (``<state>/gangs/*.json``, field
  ``dashboard``: what ``ray.init`` returned to the stream driver or the retrain cron). A private
  local Ray instance has a dashboard only with ``FRAMESTREAM_RAY_DASHBOARD=1`` and the packages
  of ``ray[default]`` (``FRAMESTREAM_SETUP_RAY_DASHBOARD=1 make setup``).

Each address is probed with an HTTP GET (at most every ``link_check_s``, ``scrape_timeout_s``
each); a link is shown while its last probe got an HTTP answer below 500.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from framestream import web_uis

log = logging.getLogger(__name__)
GANGS_DIR = "gangs"  # launcher/records.py writes <state>/gangs/<name>.json


def _answers(url: str, timeout: float) -> tuple[bool, str]:
    if not url.startswith(("http://", "https://")):
        return False, "not an http(s) address"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http checked)
            resp.read(1024)
            return resp.status < 500, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return exc.code < 500, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, timed out, bad address
        return False, str(getattr(exc, "reason", exc))[:200]


def _gang_dashboards(state: Path) -> list[str]:
    found = []
    for path in sorted((state / GANGS_DIR).glob("*.json")):
        try:
            url = json.loads(path.read_text()).get("dashboard") or ""
        except (OSError, ValueError, AttributeError):
            continue  # removed or replaced right now
        if url:
            found.append(url if "://" in url else f"http://{url}")  # Ray gives host:port
    return found


class LinkWatch:
    """``view(now)`` -> ``{"spark_ui": url, "ray_dashboard": url}`` of the links that answer,
    plus ``checked``: every candidate with its source, whether it answered and what it said."""

    def __init__(self, state: Path, frames_topic: str, spark_ui: str = "",
                 ray_dashboard: str = "", timeout: float = 1.0, every_s: float = 5.0) -> None:
        self.state, self.frames_topic = Path(state), frames_topic
        self.fixed = {"spark_ui": spark_ui, "ray_dashboard": ray_dashboard}
        self.timeout, self.every_s = timeout, every_s
        self._probed: dict[str, tuple[float, bool, str]] = {}  # url -> (when, up, said)

    def candidates(self) -> list[tuple[str, str, str]]:
        """(kind, url, source) in order of preference."""
        out: list[tuple[str, str, str]] = []
        for kind, url in self.fixed.items():
            if url:
                out.append((kind, url, "setting"))
        for rec in web_uis.announced(self.state, web_uis.SPARK_UI):
            if rec.get("frames_topic") in (None, self.frames_topic) and rec.get("url"):
                out.append(("spark_ui", str(rec["url"]), f"stream driver pid {rec.get('pid')}"))
        for url in _gang_dashboards(self.state):
            out.append(("ray_dashboard", url, "Ray, via a launcher record"))
        return out

    def _probe(self, url: str, now: float) -> tuple[bool, str]:
        last = self._probed.get(url)
        if last is None or now - last[0] >= self.every_s:
            up, said = _answers(url, self.timeout)
            if last is None or last[1] != up:
                log.info("status: %s %s (%s)", url, "answers" if up else "does not answer", said)
            last = self._probed[url] = (now, up, said)
        return last[1], last[2]

    def view(self, now: float) -> dict[str, Any]:
        links: dict[str, Any] = {}
        checked = []
        seen = set()
        for kind, url, source in self.candidates():
            if url in seen:
                continue
            seen.add(url)
            up, said = self._probe(url, now)
            checked.append({"kind": kind, "url": url, "source": source, "up": up, "said": said})
            if up and kind not in links:
                links[kind] = url
        self._probed = {u: p for u, p in self._probed.items() if u in seen}
        return {**links, "checked": checked}
