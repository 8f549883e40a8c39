"""A StreamingQueryListener that logs the stream's progress (rows/s, batch duration)."""

from __future__ import annotations

import logging

from pyspark.sql.streaming import StreamingQueryListener

log = logging.getLogger(__name__)


class ProgressLogger(StreamingQueryListener):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0
        self.rows = 0

    def onQueryStarted(self, event) -> None:  # type: ignore[no-untyped-def]
        log.info("query %s started (run %s)", event.name or event.id, event.runId)

    def onQueryProgress(self, event) -> None:  # type: ignore[no-untyped-def]
        p = event.progress
        if p.numInputRows == 0:
            return
        self.batches += 1
        self.rows += p.numInputRows
        log.info("batch %d: %d rows in %d ms (%.0f rows/s in, %.0f rows/s processed)",
                 p.batchId, p.numInputRows, p.batchDuration, p.inputRowsPerSecond or 0.0,
                 p.processedRowsPerSecond or 0.0)

    def onQueryIdle(self, event) -> None:  # type: ignore[no-untyped-def]
        pass

    def onQueryTerminated(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.exception:
            log.error("query %s failed: %s", event.id, event.exception)
        else:
            log.info("query %s stopped after %d batches, %d rows", event.id, self.batches, self.rows)
