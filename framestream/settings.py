"""One table of settings: a pydantic-settings class per subsystem, each field one setting.

Every field is read from the environment variable ``FRAMESTREAM_<SECTION>_<FIELD>`` (upper case)
and can be given by keyword; CLI flags map onto the same fields (:mod:`framestream.flags`), and
the README's settings table is generated from the same declarations (``python -m
jobs.settings_doc --write README.md``). Values are parsed by the field's type and checked at
start: a bad one raises :class:`~framestream.errors.ConfigError` naming the setting, the value
and what was expected.

    class KafkaSettings(Section):
        model_config = section("kafka")

        bootstrap: str = setting("127.0.0.1:9092", "Kafka bootstrap servers")
        partitions: int = setting(4, "partitions of new topics", ok=lambda v: v >= 1,
                                  expected=">= 1")

    KafkaSettings.load()                    # defaults + environment
    KafkaSettings.load(partitions=8)        # explicit values win over the environment
    KafkaSettings.load(env={})              # defaults only (tests)
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import (BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource,
                               SettingsConfigDict)

from framestream.errors import ConfigError

ENV_PREFIX = "FRAMESTREAM_"

#: every section class, by section name, in the order they were declared (imported)
SECTIONS: dict[str, type["Section"]] = {}

# The mapping `Section.load(env=...)` reads instead of os.environ (tests pass their own).
_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("framestream_settings_env", default=None)

_EXPECTED_BY_ERROR = {
    "bool_parsing": "a boolean (1/0, true/false, yes/no, on/off)",
    "bool_type": "a boolean (1/0, true/false, yes/no, on/off)",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "int_type": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "string_type": "a string",
    "path_type": "a path",
}


def env_name(section: str, name: str) -> str:
    return f"{ENV_PREFIX}{section}_{name}".upper()


def section(name: str) -> SettingsConfigDict:
    """The ``model_config`` of a settings section: env vars ``FRAMESTREAM_<NAME>_<FIELD>``."""
    return SettingsConfigDict(env_prefix=env_name(name, ""), frozen=True, extra="forbid",
                              case_sensitive=False, enable_decoding=False,
                              env_ignore_empty=False, validate_default=False)


def setting(default: Any = PydanticUndefined, doc: str = "", *,
            ok: Callable[[Any], bool] | None = None, expected: str = "",
            factory: Callable[[], Any] | None = None, shown: str | None = None,
            secret: bool = False) -> Any:
    """One setting: its default (or ``factory``), what it does (``doc``: flag help and README),
    and a check ``ok(value)`` that must hold, else ConfigError says ``expected``. ``shown`` is
    how the docs print a default that depends on the machine; ``secret`` keeps it out of reprs."""
    extra: dict[str, Any] = {}
    if ok is not None:
        extra["check"] = (ok, expected)
    if shown is not None:
        extra["shown"] = shown
    if secret:
        extra["secret"] = True
    if factory is not None:
        return Field(default_factory=factory, description=doc, json_schema_extra=extra,
                     repr=not secret)
    return Field(default, description=doc, json_schema_extra=extra, repr=not secret)


def field_extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def bare_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None is allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


class _Environment(EnvSettingsSource):
    """The environment, or the mapping ``Section.load(env=...)`` was given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENV.get()
        return {k.lower(): v for k, v in (os.environ if env is None else env).items()}


class Section(BaseSettings):
    """Base of every settings section: frozen, env-backed, checked, errors name the setting."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")
    section: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        prefix = cls.model_config.get("env_prefix") or ""
        if prefix.startswith(ENV_PREFIX) and prefix != ENV_PREFIX:
            cls.section = prefix[len(ENV_PREFIX):-1].lower()
            SECTIONS.setdefault(cls.section, cls)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(type(self), exc) from None

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **values: Any):  # type: ignore[no-untyped-def]
        """Defaults, then the environment (``env``, default os.environ), then ``values`` (a value
        of None means "not given", as an unset CLI flag)."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = [k for k in given if k not in cls.model_fields]
        if unknown:
            raise ConfigError(f"{cls.section}.{unknown[0]}", given[unknown[0]],
                              f"one of {list(cls.model_fields)}")
        token = _ENV.set(env)
        try:
            return cls(**given)
        finally:
            _ENV.reset(token)

    @classmethod
    def env(cls, name: str) -> str:
        """The environment variable of field ``name`` (KeyError for a field that does not exist)."""
        if name not in cls.model_fields:
            raise KeyError(f"{cls.__name__} has no setting {name!r}")
        return env_name(cls.section, name)

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value: Any, info: Any) -> Any:
        """Environment strings and CLI values: "" is None for optional fields, comma lists for
        tuples, ``~`` expanded in paths, a path given for a string field is its text."""
        typ, optional = bare_type(cls.model_fields[info.field_name].annotation)
        if isinstance(value, str):
            if optional and value == "":
                return None
            if typing.get_origin(typ) is tuple:
                return tuple(s.strip() for s in value.split(",") if s.strip())
            if typ is Path:
                return Path(value).expanduser()
        elif typ is str and isinstance(value, os.PathLike):
            return os.fspath(value)
        elif typing.get_origin(typ) is tuple and isinstance(value, list):
            return tuple(value)
        return value

    @model_validator(mode="after")
    def _checks(self) -> "Section":
        for name, info in type(self).model_fields.items():
            rule = field_extra(info).get("check")
            if rule is None:
                continue
            predicate, expected = rule
            value = getattr(self, name)
            try:
                ok = predicate(value)
            except (TypeError, ValueError, AttributeError):
                ok = False  # a value of the wrong type
            if not ok:
                raise ConfigError(env_name(self.section, name), value, expected)
        return self


def _config_error(cls: type[Section], exc: ValidationError) -> ConfigError:
    """The first problem of a ValidationError as a ConfigError naming the setting."""
    err = exc.errors()[0]
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, ConfigError):
        return original
    loc = err.get("loc") or ()
    name = str(loc[0]) if loc else ""
    if err["type"] == "extra_forbidden":
        return ConfigError(f"{cls.section}.{name}", err.get("input"),
                           f"one of {list(cls.model_fields)}")
    setting_name = env_name(cls.section, name) if name else cls.__name__
    if original is not None:
        return ConfigError(setting_name, err.get("input"), str(original))
    info = cls.model_fields.get(name)
    typ = bare_type(info.annotation)[0] if info else None
    expected = _EXPECTED_BY_ERROR.get(err["type"]) or (
        f"a value of type {getattr(typ, '__name__', typ)} ({err['msg']})")
    return ConfigError(setting_name, err.get("input"), expected)


def default_of(cls: type[Section], name: str) -> Any:
    """The default of one setting as the docs show it (``shown`` for machine-dependent ones)."""
    info = cls.model_fields[name]
    extra = field_extra(info)
    if "shown" in extra:
        return extra["shown"]
    return info.get_default(call_default_factory=True)


def describe(obj: Section) -> list[tuple[str, Any, Any]]:
    """(env var, value, default) for every setting of a loaded section (a secret's value shown as
    ``***``): for logs and docs."""
    cls = type(obj)
    return [(env_name(cls.section, name),
             "***" if field_extra(info).get("secret") and getattr(obj, name) else getattr(obj, name),
             info.get_default(call_default_factory=True))
            for name, info in cls.model_fields.items()]
