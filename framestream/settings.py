"""One table of settings: a frozen dataclass per subsystem, each field one setting.

Every field can be overridden by an environment variable ``FRAMESTREAM_<SECTION>_<FIELD>`` (upper
case) and by keyword; CLI flags map onto the same names. Values are parsed by the field's type and
checked at start: a bad one raises :class:`~framestream.errors.ConfigError` naming the setting.

    @settings_section("kafka")
    @dataclass(frozen=True)
    class KafkaSettings:
        bootstrap: str = "127.0.0.1:9092"
        partitions: int = field(default=4, metadata=check(lambda v: v >= 1, ">= 1"))

    KafkaSettings.load()                    # defaults + environment
    KafkaSettings.load(partitions=8)        # explicit values win over the environment
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from framestream.errors import ConfigError

ENV_PREFIX = "FRAMESTREAM_"
T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def check(predicate: Callable[[Any], bool], expected: str) -> dict[str, Any]:
    """Field metadata: ``predicate(value)`` must hold, else ConfigError says ``expected``."""
    return {"check": (predicate, expected)}


def env_name(section: str, name: str) -> str:
    return f"{ENV_PREFIX}{section}_{name}".upper()


def _parse(setting: str, raw: str, typ: Any) -> Any:
    """Turn an environment string into a value of the field's annotated type."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):  # Optional[X] / X | None
        if raw == "":
            return None
        typ = next(a for a in typing.get_args(typ) if a is not type(None))
    if typing.get_origin(typ) is tuple:
        return tuple(s.strip() for s in raw.split(",") if s.strip())
    if typ is bool:
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise ConfigError(setting, raw, "a boolean (1/0, true/false, yes/no, on/off)")
    if typ is Path:
        return Path(raw).expanduser()
    try:
        return typ(raw)
    except (TypeError, ValueError):
        raise ConfigError(setting, raw, f"a value of type {getattr(typ, '__name__', typ)}") from None


def settings_section(section: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: give a frozen dataclass a ``load()`` that reads the environment and checks."""

    def wrap(cls: type[T]) -> type[T]:
        hints = typing.get_type_hints(cls)

        def load(klass: type[T], env: Mapping[str, str] | None = None, **values: Any) -> T:
            env = os.environ if env is None else env
            kwargs: dict[str, Any] = {}
            for f in dataclasses.fields(klass):  # type: ignore[arg-type]
                name = env_name(section, f.name)
                if f.name in values and values[f.name] is not None:
                    kwargs[f.name] = values.pop(f.name)
                elif name in env:
                    kwargs[f.name] = _parse(name, env[name], hints[f.name])
            unknown = [k for k, v in values.items() if v is not None]
            if unknown:
                raise ConfigError(f"{section}.{unknown[0]}", values[unknown[0]],
                                  f"one of {[f.name for f in dataclasses.fields(klass)]}")
            return klass(**kwargs)

        dataclass_init = cls.__init__

        def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
            dataclass_init(self, *args, **kwargs)
            for f in dataclasses.fields(self):
                if "check" in f.metadata:
                    predicate, expected = f.metadata["check"]
                    value = getattr(self, f.name)
                    try:
                        ok = predicate(value)
                    except (TypeError, ValueError, AttributeError):
                        ok = False  # a value of the wrong type
                    if not ok:
                        raise ConfigError(env_name(section, f.name), value, expected)

        cls.load = classmethod(load)  # type: ignore[attr-defined]
        cls.__init__ = checked_init  # type: ignore[method-assign]
        cls.section = section  # type: ignore[attr-defined]
        return cls

    return wrap


def describe(obj: Any) -> list[tuple[str, Any, Any]]:
    """(env var, value, default) for every setting of a loaded section: for `--help` and docs."""
    section = type(obj).section
    return [(env_name(section, f.name), getattr(obj, f.name), f.default)
            for f in dataclasses.fields(obj)]
