"""The errors of the ranks' side; each carries its exit code through
:class:`framestream.errors.FramestreamError` (see :mod:`framestream.exits`)."""

from __future__ import annotations

from framestream.errors import ServiceError


class BackendUnavailable(ServiceError):
    """The backend asked for cannot be used on this machine."""
