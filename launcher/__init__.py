"""Placement and launching: Ray placement groups reserve a gang of ranks, mpirun starts them.

Runs in the driver / launcher process, never inside a rank (except :mod:`launcher.rank_exec`, which
only sets a rank's environment and ``exec``s its program).

- :mod:`launcher.api`: ``Launcher`` (reserve, serve or run, release) -- start here;
  ``python -m launcher {serve,retrain,run,status}`` is its CLI.
- :mod:`launcher.reservation` / :mod:`launcher.policy`: the reservation state machine and the
  serving (``SupervisionPolicy``) and run-to-completion (``CompletionPolicy``) policies (pure); :mod:`launcher.ray_gang` and :mod:`launcher.gang` drive them.
- :mod:`launcher.mpirun`: the one module that starts mpirun (``start_ranks``, ``run_mpi``), each
  launch with its folder of result and error files (:mod:`framestream.run_files`).
- :mod:`launcher.holders`, :mod:`launcher.layout`, :mod:`launcher.rsh`: bundle holders, hostfile
  and per-rank environment, mpirun's way to other nodes.
- :mod:`launcher.settings` (``FRAMESTREAM_LAUNCHER_*``), :mod:`launcher.ray_cluster`
  (``FRAMESTREAM_RAY_*``), :mod:`launcher.errors`, :mod:`launcher.records` (what status shows).
- test and benchmark clusters live apart: :mod:`tests.multinode.loopback` (several Ray nodes on one
  machine), :mod:`bench.launcher_timings`.
"""
