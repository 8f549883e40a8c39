"""The ASGI app: the page, its static assets, server-sent events and the JSON API.

    GET /                 the page (static/index.html; assets under /static, none from a CDN)
    GET /events           text/event-stream: one ``data: <snapshot JSON>`` per refresh
    GET /api/status       the whole snapshot
    GET /api/stream       counts, rates, lag, latency, dead letters, versions seen
    GET /api/ranks        the endpoint file's ranks, scraped
    GET /api/registry     serving version, versions, promote/rollback decisions
    GET /api/runs         the cron's retraining runs with accuracy per epoch
    GET /api/pins         the model version each of the last micro-batches pinned
    GET /api/links        Spark's UI and Ray's dashboard while they answer, and what was probed
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from status.collector import Collector

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'")


class SecurityHeaders:
    """Same-origin only: no inline script, no framing, no sniffing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"content-security-policy", CSP.encode()),
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"referrer-policy", b"no-referrer")]
            await send(message)
        await self.app(scope, receive, send_with if scope["type"] == "http" else send)


def create_app(collector: Collector) -> ASGIApp:
    poll_s = min(0.5, collector.settings.refresh_s)

    def part(name: str | None):  # type: ignore[no-untyped-def]
        async def endpoint(_request: Request) -> Response:
            snap = collector.latest
            return JSONResponse(snap if name is None else snap.get(name))
        return endpoint

    async def runs(_request: Request) -> Response:
        return JSONResponse(collector.latest.get("runs", []))

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            seen = -1
            yield f"retry: {int(collector.settings.refresh_s * 2000)}\n\n"
            while not collector.stopped.is_set() and not await request.is_disconnected():
                if collector.seq != seen:
                    seen = collector.seq
                    yield f"data: {json.dumps(collector.latest, separators=(',', ':'))}\n\n"
                await asyncio.sleep(poll_s)
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    routes = [Route("/", index), Route("/events", events),
              Route("/api/status", part(None)), Route("/api/stream", part("stream")),
              Route("/api/ranks", part("ranks")), Route("/api/registry", part("registry")),
              Route("/api/runs", runs), Route("/api/links", part("links")),
              Route("/api/pins", part("pins")), Mount("/static", StaticFiles(directory=STATIC))]
    return SecurityHeaders(Starlette(routes=routes))
