"""The embedded local stack: a real single-node Kafka broker and engine health checks.

Runs on the developer's machine, in ``make up``/``make demo`` and in the test fixtures. Nothing here
runs inside Spark, MPI ranks or Ray: the roles find the services through their settings.
"""
