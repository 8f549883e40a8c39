"""py4j's connections survive a fork of the driver: a forked child never shuts them down.

pyspark talks to its JVM over py4j's ClientServer: one socket per Python thread, closed by a
finalizer when its thread's state goes away. In a child made by ``fork()`` (``subprocess`` with
a ``preexec_fn``, which Ray's ``ray.init`` uses to start a local Ray; ``os.fork``) CPython tears
down every thread state but the forking one, those finalizers run *in the child*, and py4j's
``close()`` calls ``shutdown(SHUT_RDWR)`` on the sockets the child shares with the parent. The
parent's threads then lose their JVM connections: a call in flight fails with "Error while
sending or receiving" (seen in CI: the driver's Spark session, started on a thread while the main
thread started Ray, died at ``SparkConf.contains``).

:func:`install` makes ``close()`` in a process other than the one that opened the connection
drop the child's copy of the socket without ``shutdown()``, which is all a child may do.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_installed = threading.Lock()
_done = False
OWNER = "_framestream_owner_pid"


def install() -> None:
    """Guard py4j's ClientServer connections; idempotent, before the gateway connects."""
    global _done
    with _installed:
        if _done:
            return
        from py4j import clientserver

        cls = clientserver.ClientServerConnection
        connect, close = cls.connect_to_java_server, cls.close
        init_from_python = cls.init_socket_from_python_server

        def owned_connect(self: Any) -> Any:
            setattr(self, OWNER, os.getpid())
            return connect(self)

        def owned_init(self: Any, *args: Any, **kwargs: Any) -> Any:
            setattr(self, OWNER, os.getpid())
            return init_from_python(self, *args, **kwargs)

        def fork_safe_close(self: Any, reset: bool = False) -> Any:
            owner = getattr(self, OWNER, None)
            if owner is not None and owner != os.getpid():
                _drop_in_child(self)
                return None
            return close(self, reset)

        cls.connect_to_java_server = owned_connect
        cls.init_socket_from_python_server = owned_init
        cls.close = fork_safe_close
        _done = True


def _drop_in_child(conn: Any) -> None:
    """The child's copies of the file descriptors go; the parent's connection stays up."""
    for name in ("stream", "socket"):
        handle = getattr(conn, name, None)
        setattr(conn, name, None)
        if handle is not None:
            try:
                handle.close()  # close(2) of the child's descriptor only: no shutdown(2)
            except OSError:
                pass
