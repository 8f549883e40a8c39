"""framestream's live status page: a small ASGI service (Starlette on uvicorn).

Runs alone (``python -m status --bootstrap ... --registry ... --state ...``) or in the stream
driver's process (``--status-port``). It reads only what the stream already writes: the
``predictions`` and ``frames.dlq`` topics and the ``frames`` watermarks (Kafka), the registry
folder (versions, ``decisions.jsonl``), the state folder (the cron's ``retrain/runs.jsonl``, the
ranks' endpoint file, the driver's Spark UI in ``ui/``, Ray's dashboard in ``gangs/``), the
micro-batches' version pins in the stream's checkpoint and each rank's Prometheus endpoint; it
probes the UIs' addresses before linking to them. It never writes anything.
"""
