"""Peer pipelines a user would pick instead of framestream, run on the same frames, model and cores.

Each is ``python -m bench.peers.<name> --set fashion --topic-in T --topic-out P ...`` and runs until
SIGTERM; :mod:`bench.stream` starts them, sends them bursts and reads their predictions.
"""
