"""CLI flags made from settings, so entry points never re-declare a setting by hand.

    p = argparse.ArgumentParser(...)
    add_settings(p, KafkaSettings, "bootstrap", "frames_topic", aliases={"frames_topic": "--topic"})
    args = p.parse_args(argv)
    kafka = from_args(args, KafkaSettings)      # flags given win over FRAMESTREAM_KAFKA_*

Each flag is ``--<prefix><field-with-dashes>``; its help is the setting's description with the
default and the environment variable; a flag not given stays None, so the environment and then the
default apply (:meth:`framestream.settings.Section.load`). Booleans get ``--x/--no-x``.
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any

from framestream.settings import Section, bare_type, default_of, env_name


def dest(cls: type[Section], name: str) -> str:
    """The argparse ``dest`` of a setting's flag: unique across sections."""
    return f"{cls.section}__{name}"


def flag(name: str, prefix: str = "") -> str:
    return f"--{prefix}{name.replace('_', '-')}"


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, str) and value == "":
        return "empty"
    return str(value)


def add_settings(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type[Section],
                 *names: str, prefix: str = "",
                 aliases: dict[str, str | tuple[str, ...]] | None = None,
                 helps: dict[str, str] | None = None) -> None:
    """Add one flag per named setting of ``cls`` to ``parser`` (or an argument group).
    ``aliases``: extra option strings per field (old flag names); ``helps``: a different help."""
    aliases = aliases or {}
    helps = helps or {}
    for name in names:
        info = cls.model_fields[name]  # KeyError: a setting that does not exist
        more = aliases.get(name, ())
        options = [flag(name, prefix), *((more,) if isinstance(more, str) else more)]
        doc = helps.get(name) or info.description or name
        text = (f"{doc} (default {_shown(default_of(cls, name))}; "
                f"{env_name(cls.section, name)})").replace("%", "%%")
        typ, _ = bare_type(info.annotation)
        kwargs: dict[str, Any] = {"dest": dest(cls, name), "default": None, "help": text}
        if typ is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(typ) is tuple:
            kwargs["metavar"] = "A,B"
        elif typ is Path:
            kwargs["metavar"] = "PATH"
        else:
            kwargs["metavar"] = name.upper()
            if typ in (int, float):
                kwargs["type"] = typ
        parser.add_argument(*options, **kwargs)


def given(args: argparse.Namespace, cls: type[Section]) -> dict[str, Any]:
    """The settings of ``cls`` given as flags (those not given are left out)."""
    values = {name: getattr(args, dest(cls, name), None) for name in cls.model_fields}
    return {k: v for k, v in values.items() if v is not None}


def from_args(args: argparse.Namespace, cls: type[Section], **values: Any) -> Any:
    """``cls`` loaded with the flags given (``values`` not None win over flags)."""
    merged = given(args, cls)
    merged.update({k: v for k, v in values.items() if v is not None})
    return cls.load(**merged)


def as_argv(cls: type[Section], values: dict[str, Any], prefix: str = "") -> list[str]:
    """The flags that pass ``values`` on to another framestream entry point."""
    out: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        cls.model_fields[name]  # KeyError: a setting that does not exist
        if isinstance(value, bool):
            out.append(flag(name, prefix) if value else flag(name, "no-" + prefix))
        else:
            out += [flag(name, prefix), _shown(value) if isinstance(value, tuple) else str(value)]
    return out
