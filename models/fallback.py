"""Which version to serve when the promoted one cannot be: shared by the stream driver (what it
pins for a micro-batch) and by a starting rank (what it loads as its default), so both make the
same choice from the same registry.

The version ``serving.json`` names is served when it verifies. When it does not (its weights fail
their checksum, its manifest is broken or points outside its folder, it does not exist) or
``serving.json`` itself does not parse, the choice falls back, newest first, to:

1. ``prefer`` (the driver's last good version), when given;
2. the versions served before it (the history in ``serving.json``, or, when that file is
   unreadable, the promote/rollback events in ``decisions.jsonl``);
3. any other published version, newest first (never promoted: logged as such).

The first that ``accept`` takes (by default :meth:`Registry.verify`; a rank passes its loader, so
the checksum is checked on the very bytes it loads) is served; :class:`ServingChoice` says which and
why (the callers log it: the driver chooses once per micro-batch). Nothing verifies:
:class:`RegistryError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.errors import (BadServingFile, BadVersion, ChecksumMismatch, RegistryError,
                           VersionNotFound)

if TYPE_CHECKING:
    from models.registry import Registry

#: Why the named version was not served (the ``reason`` label of the ranks' fallback counter).
REASONS = ("checksum_mismatch", "version_not_found", "bad_version", "unreadable_serving",
           "unreadable_weights", "load_failed")


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, ChecksumMismatch):
        return "checksum_mismatch"
    if isinstance(exc, VersionNotFound):
        return "version_not_found"
    if isinstance(exc, BadServingFile):
        return "unreadable_serving"
    if isinstance(exc, BadVersion):
        return "bad_version"
    if isinstance(exc, OSError):
        return "unreadable_weights"
    return "load_failed"


@dataclass(frozen=True)
class ServingChoice:
    version: str                # what is served
    named: str | None           # what serving.json names (None: unreadable)
    reason: str = ""            # why ``named`` is not served ("" = it is)
    detail: str = ""            # the error that refused it
    promoted: bool = True       # False: a published version that was never promoted

    @property
    def fell_back(self) -> bool:
        return bool(self.reason)


def choose_serving(registry: "Registry", accept: Callable[[str], Any] | None = None,
                   prefer: str = "") -> ServingChoice:
    """The version to serve now (see the module doc). Raises :class:`RegistryError` when nothing
    is promoted or no candidate verifies."""
    accept = accept or registry.verify
    try:
        named = registry.serving()
    except BadServingFile as exc:
        named, reason, detail = None, reason_of(exc), str(exc)
    else:
        if named is None:
            raise RegistryError(f"registry {registry.root} has no serving version: train one "
                                f"(mpirun -n 2 python jobs/retrain.py), promote one (`python -m "
                                f"models.registry --root {registry.root} promote V`) or name "
                                f"--version")
        try:
            accept(named)
            return ServingChoice(named, named)
        except Exception as exc:  # whatever stops it from loading: fall back, never abort
            reason, detail = reason_of(exc), f"{type(exc).__name__}: {exc}"
    served = list(reversed(registry.serving_history()))
    published = list(reversed(registry.version_names()))
    tried = {named}
    refusals = [f"{named}: {detail}"]
    for candidate in [prefer, *served, *published]:
        if not candidate or candidate in tried:
            continue
        tried.add(candidate)
        try:
            accept(candidate)
        except Exception as exc:
            refusals.append(f"{candidate}: {type(exc).__name__}: {exc}")
            continue
        return ServingChoice(candidate, named, reason, detail,
                             promoted=candidate in served or candidate == prefer)
    raise RegistryError(f"registry {registry.root}: no version can be served: "
                        + "; ".join(refusals) + ". Publish a good version (retrain) and promote it")
