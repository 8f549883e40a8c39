"""framestream's live status page: a small ASGI service (Starlette on uvicorn).

Runs alone (``python -m status --bootstrap ... --registry ... --state ...``) or in the stream
driver's process (``--status-port``). It reads only what the stream already writes: the
``predictions`` and ``frames.dlq`` topics and the ``frames`` watermarks (Kafka), the registry
folder (versions, ``decisions.jsonl``), the state folder (the cron's ``retrain/runs.jsonl``, the
ranks' endpoint file) and each rank's Prometheus endpoint. It never writes anything.
"""
