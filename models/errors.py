"""Errors of the model registry. Each message names the file or version and what to do next."""

from __future__ import annotations

from pathlib import Path

from framestream.errors import FramestreamError


class RegistryError(FramestreamError):
    """Base of the registry's errors."""


class VersionNotFound(RegistryError, LookupError):
    """A version that the registry does not hold."""

    exit_status = 2  # a name that does not exist: usage

    def __init__(self, version: str, root: Path, known: list[str]) -> None:
        shown = ", ".join(known[-5:]) or "none"
        super().__init__(f"no model version {version!r} in registry {root} (latest: {shown}); "
                         f"list them with `python -m models.registry --root {root} list`")
        self.version = version


class ChecksumMismatch(RegistryError):
    """A weights file whose sha256 differs from its manifest: corrupted or replaced after publish."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch for {path}: manifest expects sha256 {expected}, file has "
                         f"{actual}. The file was corrupted or replaced after it was published; "
                         f"do not serve it: publish a new version (retrain) or roll back")
        self.path, self.expected, self.actual = path, expected, actual


class NothingToRollBack(RegistryError):
    """``rollback`` with no earlier served version in the serving history."""


class BadVersion(RegistryError):
    """A version whose manifest cannot be used: it does not parse, lacks fields, or names a weights
    file outside its own folder. Never served; a starting rank falls back past it."""

    def __init__(self, version: str, root: Path, why: str) -> None:
        super().__init__(f"model version {version!r} in registry {root} is not servable: {why}. "
                         f"Publish a new version (retrain) or roll back "
                         f"(`python -m models.registry --root {root} rollback`)")
        self.version = version


class BadServingFile(RegistryError):
    """``serving.json`` that does not parse or does not have the expected shape."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path} is not a valid serving pointer ({why}); serving falls back to "
                         f"the newest version that verifies. Repair it: move it aside and "
                         f"`python -m models.registry --root {path.parent} promote V`")
        self.path = path
