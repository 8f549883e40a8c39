"""Code shared by every framestream role: settings, paths, errors, logging set-up.

Role code lives in the role folders (``etl``, ``mpi_workers``, ``launcher``, ``models``, ``jobs``);
only what two or more of them need is here.
"""
