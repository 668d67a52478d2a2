"""What a parameter accepts, said once in its type hint and checked from there.

Ranges and choices ride on the hint as `typing.Annotated` metadata (`batch_size: PositiveInt`,
`pooler: Annotated[str, OneOf(*POOLERS, noun="pooler")]`). `check_value` checks one value against a
hint, `check_arguments` a mapping of them against a callable's signature; the config schema
(`sparsecse.schema`) and the constructors decorated with `@checked` both go through them, so a
constructor and the config report the same one-line ConfigError.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import difflib
import functools
import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union

from sparsecse.errors import ConfigError

SEQUENCES = (list, tuple, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable)
MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "None"}


class Constraint:
    """A condition on a value that already has the hinted type."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def text(self, base: Any) -> str:
        """What is expected, e.g. "a positive integer" (`base`: the hinted type)."""
        raise NotImplementedError

    def message(self, value: Any, base: Any) -> str:
        return f"must be {self.text(base)}, got {value!r}"


@dataclass(frozen=True)
class AtLeast(Constraint):
    minimum: float

    def accepts(self, value: Any) -> bool:
        return value >= self.minimum

    def text(self, base: Any) -> str:
        if base is not int:
            return f"a number >= {self.minimum:g}"
        known = {0: "a non-negative integer", 1: "a positive integer"}
        return known.get(self.minimum, f"an integer >= {self.minimum}")


@dataclass(frozen=True)
class GreaterThan(Constraint):
    bound: float

    def accepts(self, value: Any) -> bool:
        return value > self.bound

    def text(self, base: Any) -> str:
        return f"{'an integer' if base is int else 'a number'} > {self.bound:g}"


@dataclass(frozen=True)
class Between(Constraint):
    low: float
    high: float
    closed_right: bool = True

    def accepts(self, value: Any) -> bool:
        return self.low <= value <= self.high if self.closed_right else self.low <= value < self.high

    def text(self, base: Any) -> str:
        kind = "a fraction" if (self.low, self.high) == (0, 1) else "a number"
        return f"{kind} in [{self.low:g}, {self.high:g}{']' if self.closed_right else ')'}"


@dataclass(frozen=True, init=False)
class OneOf(Constraint):
    choices: tuple
    noun: str = ""  # "pooler": "unknown pooler 'x'; expected one of ..." instead of "expected one of ..."

    def __init__(self, *choices: Any, noun: str = ""):
        object.__setattr__(self, "choices", choices)
        object.__setattr__(self, "noun", noun)

    def accepts(self, value: Any) -> bool:
        return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in self.choices)

    def text(self, base: Any) -> str:
        return f"one of {', '.join(map(str, self.choices))}"

    def message(self, value: Any, base: Any) -> str:
        if self.noun:
            return f"unknown {self.noun} {value!r}; expected {self.text(base)}"
        return f"expected {self.text(base)}, got {value!r}"


PositiveInt = Annotated[int, AtLeast(1)]
NonNegativeInt = Annotated[int, AtLeast(0)]
Fraction = Annotated[float, Between(0.0, 1.0, closed_right=False)]  # in [0, 1)


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def describe(hint: Any) -> str:
    """What a hint asks for, in words: "an integer or None"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return args[1].text(args[0]) if isinstance(args[1], Constraint) else describe(args[0])
    if origin in (Union, types.UnionType):
        literals = [a for m in args if typing.get_origin(m) is Literal for a in typing.get_args(m)]
        others = [describe(m) for m in args if typing.get_origin(m) is not Literal]
        return " or ".join(([describe(Literal[tuple(literals)])] if literals else []) + others)
    if origin is Literal:
        return f"one of {', '.join(map(repr, args))}"
    if origin in SEQUENCES or hint in SEQUENCES:
        return "a list"
    if origin in MAPPINGS or hint in MAPPINGS or is_record(hint):
        return "a mapping"
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return "a path"
    return NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def is_record(hint: Any) -> bool:
    """A dataclass or TypedDict: a mapping with typed fields."""
    return isinstance(hint, type) and (dataclasses.is_dataclass(hint) or typing.is_typeddict(hint))


def fits_class(value: Any, cls: Any) -> bool:
    """Whether `value` fits a plain class hint; a class it cannot be checked against accepts it."""
    if cls is bool or cls is type(None):
        return isinstance(value, cls)
    if cls is int or cls is float:
        return isinstance(value, (int, float) if cls is float else int) and not isinstance(value, bool)
    if cls is str:
        return isinstance(value, str)
    if isinstance(cls, type) and issubclass(cls, PurePath):
        return isinstance(value, (str, os.PathLike))
    if cls in SEQUENCES:
        return isinstance(value, abc.Sequence) and not isinstance(value, (str, bytes))
    if cls in MAPPINGS:
        return isinstance(value, abc.Mapping)
    if cls is abc.Callable:
        return callable(value)
    return True


def check_value(key: str, value: Any, hint: Any) -> None:
    """A ConfigError on `key` unless `value` fits `hint` (types, items, Annotated constraints)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        check_annotated(key, value, args[0], args[1:])
    elif origin in (Union, types.UnionType):
        check_union(key, value, hint)
    elif origin is Literal:
        if not OneOf(*args).accepts(value):
            raise mismatch(key, value, hint)
    elif origin in SEQUENCES:
        check_items(key, value, hint)
    elif origin in MAPPINGS:
        if not isinstance(value, abc.Mapping):
            raise mismatch(key, value, hint)
        for name, item in value.items():
            check_value(join(key, str(name)), item, args[1])
    elif is_record(hint):
        check_fields(key, value, hint)
    elif origin is abc.Callable or origin is None:
        if not fits_class(value, origin or hint):
            raise mismatch(key, value, hint)


def mismatch(key: str, value: Any, hint: Any) -> ConfigError:
    return ConfigError(key, f"expected {describe(hint)}, got {value!r} ({type(value).__name__})")


def check_annotated(key: str, value: Any, base: Any, metadata: Sequence) -> None:
    """The base type, then each constraint; a value of the wrong type gets the first constraint's
    message ("must be a positive integer, got 'abc'"), which names the type too."""
    constraints = [m for m in metadata if isinstance(m, Constraint)]
    try:
        check_value(key, value, base)
    except ConfigError:
        if not constraints:
            raise
        raise ConfigError(key, constraints[0].message(value, base)) from None
    for constraint in constraints:
        if not constraint.accepts(value):
            raise ConfigError(key, constraint.message(value, base))


def check_union(key: str, value: Any, hint: Any) -> None:
    """Any member will do; with one member besides None, its own message says what is wrong."""
    members = typing.get_args(hint)
    for member in members:
        try:
            return check_value(key, value, member)
        except ConfigError:
            pass
    others = [m for m in members if m is not type(None)]
    if value is not None and len(others) == 1:
        check_value(key, value, others[0])
    raise mismatch(key, value, hint)


def check_items(key: str, value: Any, hint: Any) -> None:
    """A list (not a string); `tuple[X, Y]` also by length; each item against its hint."""
    if not fits_class(value, list):
        raise mismatch(key, value, hint)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(key, f"expected a list of {len(args)} items, got {len(value)}")
        item_hints = args
    else:
        item_hints = [args[0] if args else Any] * len(value)
    for index, (item, item_hint) in enumerate(zip(value, item_hints)):
        check_value(f"{key}[{index}]", item, item_hint)


def unknown_key(name: str, known: Sequence[str], owner: str = "") -> str:
    """The message for a key that is not one of `known`: the closest match, else the list."""
    where = f"unknown key for {owner}" if owner else "unknown key"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"{where}; did you mean {close[0]!r}?"
    return f"{where}; expected one of: {', '.join(known)}" if known else f"{where}; it takes none"


def record_fields(record: type) -> tuple[dict[str, Any], set[str]]:
    """A dataclass's or TypedDict's field hints and the names it requires."""
    hints = typing.get_type_hints(record, include_extras=True)
    if typing.is_typeddict(record):
        return hints, set(record.__required_keys__)
    fields = dataclasses.fields(record)
    missing = (dataclasses.MISSING, dataclasses.MISSING)
    return {f.name: hints[f.name] for f in fields}, {
        f.name for f in fields if (f.default, f.default_factory) == missing
    }


def check_fields(key: str, value: Any, record: type) -> None:
    """A mapping against a dataclass's or TypedDict's fields: no unknown keys, none missing."""
    if not isinstance(value, abc.Mapping):
        raise mismatch(key, value, record)
    hints, required = record_fields(record)
    for name, item in value.items():
        if name not in hints:
            raise ConfigError(join(key, name), unknown_key(name, list(hints)))
        check_value(join(key, name), item, hints[name])
    for name in hints:
        if name in required and name not in value:
            raise ConfigError(join(key, name), "is missing")


def annotation(raw: Any, namespace: dict) -> Any:
    """One parameter's annotation, evaluated as typing.get_type_hints would; Any if it cannot be."""
    if raw is inspect.Parameter.empty:
        return Any
    try:
        return eval(raw, namespace) if isinstance(raw, str) else raw
    except Exception:
        return Any


@functools.cache
def parameter_hints(target: Callable) -> tuple[dict[str, Any], bool]:
    """The named parameters of a callable (a class: of its constructor) with their hints, and
    whether it takes **kwargs."""
    function = inspect.unwrap(target.__init__ if isinstance(target, type) else target)
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # one unresolvable annotation (e.g. a name imported only for type checkers)
        namespace = getattr(function, "__globals__", {})
        raw = inspect.signature(function).parameters.values()
        hints = {p.name: annotation(p.annotation, namespace) for p in raw}
    parameters = inspect.signature(target).parameters.values()
    named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return {p.name: hints.get(p.name, Any) for p in named}, any(p.kind is p.VAR_KEYWORD for p in parameters)


def check_arguments(
    target: Callable,
    values: Mapping[str, Any],
    prefix: str = "",
    owner: str = "",
    check: Callable[[str, Any, Any], None] = check_value,
) -> None:
    """Each value against the hint of `target`'s parameter of that name (keys `prefix.name`). A name
    it does not take is refused, unless it takes **kwargs: those names cannot be checked here."""
    hints, takes_kwargs = parameter_hints(target)
    for name, value in values.items():
        if name in hints:
            check(join(prefix, name), value, hints[name])
        elif not takes_kwargs:
            owner = owner or f"{target.__module__}.{target.__qualname__}"
            raise ConfigError(join(prefix, name), unknown_key(name, list(hints), owner))


def checked(method: Callable) -> Callable:
    """Check a method's arguments (all but self or cls) against its hints at every call."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hints, _ = parameter_hints(method)
        for name, value in list(signature.bind(*args, **kwargs).arguments.items())[1:]:
            check_value(name, value, hints.get(name, Any))
        return method(*args, **kwargs)

    return wrapper
