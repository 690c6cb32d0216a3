"""Validated config dataclasses shared by method, training and evaluation settings.

A :class:`ValidatedConfig` checks field types (coercing int -> float and JSON lists
losslessly) on construction, allowed choices included (a ``Literal[...]`` annotation);
``from_dict`` rejects unknown keys. Every error is a :class:`ConfigError` whose message
starts with the offending key. Every field says what it does in its metadata
(:func:`setting`), which ``mitp config`` prints.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import reprlib
import types
import typing
from typing import Any, ClassVar

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from .errors import MitpError


class ConfigError(MitpError):
    """A config key that is unknown or holds an invalid value; with no key (""), the file ``source`` as a whole
    (missing, not YAML, not a mapping)."""

    def __init__(self, key: str, message: str, source: str | None = None):
        key = str(key)  # YAML keys may be numbers (`1: x`)
        super().__init__(": ".join(part for part in (source, key, message) if part))
        self.key = key
        self.message = message
        self.source = source

    def rekeyed(self, key: str, suffix: str = "") -> ConfigError:
        """The same error under another key (a section prefix added), the message kept."""
        return ConfigError(key, self.message + suffix, self.source)

    def located(self, source: str) -> ConfigError:
        """The same error, naming the file the key was read from."""
        return ConfigError(self.key, self.message, source)


_SHORT = reprlib.Repr()
_SHORT.maxlevel = 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxfrozenset = _SHORT.maxdict = 6
_SHORT.maxstring = _SHORT.maxother = 40
_SHORT.maxlong = 30


def quote(value: Any) -> str:
    """``repr(value)`` cut short (two levels, six items, 40 characters each) for an error message: a value
    read from YAML can be huge (a few lines of nested aliases expand to millions of items)."""
    return _SHORT.repr(value)


def check_range(key: str, value: Any, low: int, high: int, allow_null: bool = False) -> None:
    """``value`` is an integer in [low, high] (or None where ``allow_null``); a ConfigError naming ``key``
    and the range otherwise."""
    if value is None and allow_null:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        null = " or null" if allow_null else ""
        raise ConfigError(key, f"must be an integer in [{low}, {high}]{null}, got {quote(value)}")


def yaml_error(err: BaseException, text: str = "") -> tuple[str | None, str]:
    """Where YAML ``text`` stopped parsing (``"line:column"``, from 1; None when unknown) and why, in one line:
    PyYAML's own message spans several lines with the text quoted and a caret."""
    if isinstance(err, RecursionError):
        return None, "nested too deeply"
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        reason = err.problem or err.context or "cannot parse"
        if err.problem and err.context:
            at = f" at {err.context_mark.line + 1}:{err.context_mark.column + 1}" if err.context_mark else ""
            reason += f" ({err.context}{at})"
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else None
    elif isinstance(err, yaml.reader.ReaderError):
        character = f"#x{err.character:04x}" if isinstance(err.character, int) else repr(err.character)
        reason = f"unacceptable character {character}: {err.reason}"
        line, start = text.count("\n", 0, err.position) + 1, text.rfind("\n", 0, err.position) + 1
        where = f"{line}:{err.position - start + 1}" if text else None
    else:  # a value YAML's own constructors refuse: a date like 2020-13-01, an int of over 4300 digits
        reason, where = str(err).split(";")[0], None
    reason = " ".join(reason.split())
    return where, reason if len(reason) <= 200 else reason[:197] + "..."


# YAML 1.1 reads 1e-4 (no dot) as a string; on a command line it is always meant as a number.
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_value(text: str) -> Any:
    """Parse a ``--set key=value`` value with YAML rules (numbers, booleans, lists, null; 1e-4 too)."""
    if _EXPONENT.fullmatch(text.strip()):
        return float(text)
    return yaml.safe_load(text) if text != "" else ""


def parse_overrides(pairs: list[str]) -> dict:
    """Turn ``["a=1", "b.c=[2,3]"]`` into ``{"a": 1, "b.c": [2, 3]}`` (keys stay dotted)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(pair, "expected key=value")
        try:
            overrides[key.strip()] = parse_value(value)
        except (yaml.YAMLError, RecursionError, ValueError) as err:
            raise ConfigError(
                key.strip(), f"{quote(value)} is not a valid value (YAML: {yaml_error(err)[1]})"
            ) from None
    return overrides


def flatten(data: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``: nested sections as dotted keys."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter:
    # strict: no bool for an int, no "1" for a number; an int is a float; no infinity or NaN
    return TypeAdapter(annotation, config=ConfigDict(strict=True, allow_inf_nan=False))


def check_type(key: str, value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` (pydantic, strict: an int becomes a float, a list's items are checked,
    ``Literal`` choices are exact); a ConfigError naming ``key`` otherwise."""
    if (
        isinstance(value, str)
        and _EXPONENT.fullmatch(value.strip())
        and _adapter(annotation).json_schema().get("type", "") in ("number", "")
    ):
        value = float(value)  # `lr: 1e-4` in a YAML file (YAML 1.1 reads it as text)
    if dataclasses.is_dataclass(annotation):  # a section, validated on its own construction
        if isinstance(value, annotation):
            return value
        raise ConfigError(key, f"expected {_type_name(annotation)}, got {quote(value)}")
    if isinstance(value, tuple):
        value = list(value)
    try:
        return _adapter(annotation).validate_python(value)
    except ValidationError as err:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            return check_type(key, float(value), annotation)  # `lr: 1e-4` in a YAML file (YAML 1.1 reads text)
        kinds = {e["type"] for e in err.errors()}
        if "finite_number" in kinds:
            raise ConfigError(key, f"must be a finite number, got {quote(value)}") from None
        if typing.get_origin(annotation) is typing.Literal:
            raise ConfigError(
                key, f"{quote(value)} is not one of {', '.join(map(repr, typing.get_args(annotation)))}"
            ) from None
        raise ConfigError(key, f"expected {describe(annotation)}, got {quote(value)}") from None


def setting(default=dataclasses.MISSING, help: str = "", *, default_factory=dataclasses.MISSING):
    """A config field with its help text (peft's ``field(metadata={"help": ...})``)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


def describe(annotation: Any) -> str:
    """A config type for people: ``int``, ``float or null``, ``one of 'a', 'b'``, ``list of int``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        (item, *_) = typing.get_args(annotation) or (Any,)
        return f"list of {describe(item)}"
    if annotation is type(None):
        return "null"
    return _type_name(annotation)


@dataclasses.dataclass
class ValidatedConfig:
    """Base dataclass: typed fields (``Literal`` choices included) and ``check()`` run on construction."""

    # prefix for error keys, e.g. "train." so errors name "train.lr"
    key_prefix: ClassVar[str] = ""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            key = self.key_prefix + f.name
            object.__setattr__(self, f.name, check_type(key, getattr(self, f.name), hints[f.name]))
        self.check()

    @classmethod
    def fields_help(cls) -> list[dict]:
        """Every key with its type, default and help, in declaration order (``mitp config``)."""
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            default = (
                f.default
                if f.default is not dataclasses.MISSING
                else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            )
            if dataclasses.is_dataclass(default):
                default = dataclasses.asdict(default)
            rows.append(
                {"key": f.name, "type": describe(hints[f.name]), "default": default, "help": f.metadata.get("help", "")}
            )
        return rows

    def check(self) -> None:
        """Cross-field checks; raise ConfigError naming the key."""

    def require(self, condition: bool, name: str, message: str) -> None:
        if not condition:
            raise ConfigError(self.key_prefix + name, message)

    def require_at_least(self, name: str, minimum, allow_null: bool = False) -> None:
        value = getattr(self, name)
        if value is None and allow_null:
            return
        null = " or null" if allow_null else ""
        self.require(value >= minimum, name, f"must be >= {minimum}{null}, got {quote(value)}")

    def require_in_range(self, name: str, low: int, high: int, allow_null: bool = False) -> None:
        check_range(self.key_prefix + name, getattr(self, name), low, high, allow_null)

    def require_positive(self, name: str, allow_null: bool = False) -> None:
        value = getattr(self, name)
        if value is None and allow_null:
            return
        null = " or null" if allow_null else ""
        self.require(value > 0, name, f"must be > 0{null}, got {quote(value)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, data: dict | None):
        data = dict(data or {})
        known = cls.field_names()
        for key in data:
            if key not in known:
                raise ConfigError(f"{cls.key_prefix}{key}", f"unknown key; known keys: {', '.join(sorted(known))}")
        return cls(**data)
