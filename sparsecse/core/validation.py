"""What a parameter accepts, said once in its type hint and checked by pydantic.

Ranges and choices ride on the hint (`batch_size: PositiveInt`, `pooler: Pooler`, a `Literal`).
`check_arguments` checks a mapping of values against a callable's signature: the config check
(`sparsecse.cli.config`) runs it on every group before anything is instantiated, and constructors
decorated with `@checked` on their own arguments, so both report the same one-line ConfigError
naming the dotted key (`data.batch_size: must be greater than or equal to 1, got 0`).
"""

from __future__ import annotations

import collections.abc as abc
import difflib
import functools
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError
from typing_extensions import is_typeddict

from sparsecse.core.errors import ConfigError

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]  # in [0, 1)
Speedup = Annotated[float, Field(gt=1.0)]  # an encode speed-up over the dense model
PositiveFloat = Annotated[float, Field(gt=0.0)]

# Config values come from YAML and the command line: a string is never silently read as a number or a
# bool, and the checked values are not the ones instantiated, so nothing may be converted.
STRICT = ConfigDict(strict=True, arbitrary_types_allowed=True)
STRICT_RECORD = ConfigDict(strict=True, extra="forbid")  # for a TypedDict's `__pydantic_config__`


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def unknown_key(name: str, known: Sequence[str], owner: str = "") -> str:
    """The message for a key that is not one of `known`: the closest match, else the list."""
    where = f"unknown key for {owner}" if owner else "unknown key"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"{where}; did you mean {close[0]!r}?"
    return f"{where}; expected one of: {', '.join(known)}" if known else f"{where}; it takes none"


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _relaxed(hint: Any) -> Any:
    """`hint` with a path also accepting a string and a tuple a list: YAML has neither type."""
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return Union[str, hint]  # noqa: UP007 (a hint built at run time)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if not args or origin in (Literal, abc.Callable):
        return hint
    if origin is Annotated:
        return Annotated[(_relaxed(args[0]), *hint.__metadata__)]
    relaxed = tuple(_relaxed(a) for a in args)
    if origin in (Union, types.UnionType):
        return Union[relaxed]  # noqa: UP007
    if origin is tuple:
        return Annotated[tuple[relaxed], BeforeValidator(_as_tuple)]
    try:
        return origin[relaxed]
    except TypeError:
        return hint


def _field(hint: Any) -> tuple[Any, Any]:
    """A model field for one parameter: never required (a config gives only what it changes); a hint
    pydantic cannot check accepts anything."""
    hint = _relaxed(hint)
    try:
        _adapter(hint)
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError, NameError):
        return Any, None
    return (hint if _resolved(hint) else Any), None


def _resolved(hint: Any) -> bool:
    """No name left as a string (an import only for type checkers, e.g. wandb's `Run`)."""
    if isinstance(hint, (str, typing.ForwardRef)):
        return False
    literal = (str, int, bool)  # a Literal's values are no names
    return all(_resolved(a) for a in typing.get_args(hint) if not isinstance(a, literal))


def _adapter(hint: Any) -> TypeAdapter:
    """A validator for `hint`; a record (TypedDict) brings its own strict config."""
    return TypeAdapter(hint) if is_typeddict(hint) else TypeAdapter(hint, config=STRICT)


def passes_options_to(target: Callable) -> Callable[[Callable], Callable]:
    """For a function that hands its `**options` on to `target`: its signature, as `inspect`, the
    checks and the config check see it, is its own named parameters followed by `target`'s keyword
    parameters, with their hints and defaults. So `target`'s options are declared once, in `target`."""

    def decorate(function: Callable) -> Callable:
        own = [p for p in inspect.signature(function).parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in own}
        theirs = [
            p.replace(kind=p.KEYWORD_ONLY)
            for p in inspect.signature(target).parameters.values()
            if p.name not in names and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        function.__signature__ = inspect.Signature(own + theirs)
        function.__options_of__ = target
        return function

    return decorate


def _hints(target: Callable) -> dict[str, Any]:
    """The callable's (a class: its constructor's) parameter hints, those of the callable it passes
    its options to included; Any for one that cannot be resolved (a name imported only for type checkers)."""
    function = inspect.unwrap(target.__init__ if isinstance(target, type) else target)
    options_of = getattr(function, "__options_of__", None)
    forwarded = _hints(options_of) if options_of is not None else {}
    return forwarded | _own_hints(function)


def _own_hints(function: Callable) -> dict[str, Any]:
    """The function's parameter hints; one that cannot be resolved (a name imported only for type
    checkers, e.g. wandb's `Run`) becomes Any, and the others are still checked."""
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:
        namespace, hints = getattr(function, "__globals__", {}), {}
        for name, annotation in getattr(function, "__annotations__", {}).items():
            holder = types.SimpleNamespace(__annotations__={name: annotation})
            try:
                hints |= typing.get_type_hints(holder, globalns=namespace, include_extras=True)
            except Exception:
                hints[name] = Any
        return hints


@functools.cache
def arguments_model(target: Callable) -> tuple[type, dict[str, Any], bool]:
    """(pydantic model of `target`'s named parameters, their hints as checked, whether it takes **kwargs)."""
    parameters = inspect.signature(target).parameters.values()
    named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]
    hints = _hints(target)
    hints = {p.name: hints.get(p.name, Any) if p.annotation is not p.empty else Any for p in named}
    fields = {name: _field(hint) for name, hint in hints.items()}
    model = create_model(f"{getattr(target, '__qualname__', 'target')}Arguments", __config__=STRICT, **fields)
    return (
        model,
        {name: hint for name, (hint, _) in fields.items()},
        any(p.kind is p.VAR_KEYWORD for p in parameters),
    )


def check_arguments(
    target: Callable,
    values: Mapping[str, Any],
    prefix: str = "",
    owner: str = "",
    checked_elsewhere: Collection[str] = (),
) -> None:
    """Each value against the hint of `target`'s parameter of that name (keys `prefix.name`). A name
    it does not take is refused, unless it takes **kwargs: those names cannot be checked here. The
    values of `checked_elsewhere` (nested `_target_` configs) are left to the caller."""
    model, hints, takes_kwargs = arguments_model(target)
    for name in values:
        if name not in hints and not takes_kwargs:
            owner = owner or f"{target.__module__}.{target.__qualname__}"
            raise ConfigError(join(prefix, name), unknown_key(name, list(hints), owner))
    try:
        model.model_validate(
            {k: plain(v) for k, v in values.items() if k in hints and k not in checked_elsewhere}
        )
    except ValidationError as err:
        name = err.errors()[0]["loc"][0]
        raise config_error(err, join(prefix, str(name)), hints[name], skip=1) from None


def plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists (an OmegaConf ListConfig is a list to check)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def check_value(key: str, value: Any, hint: Any) -> None:
    """A ConfigError on `key` unless `value` fits `hint`."""
    hint = _relaxed(hint)
    try:
        _adapter(hint).validate_python(plain(value))
    except ValidationError as err:
        raise config_error(err, key, hint) from None


def checked(method: Callable) -> Callable:
    """Check a constructor's arguments (all but self) against its hints at every call."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        positional = dict(zip(list(signature.parameters)[1:], args[1:]))
        check_arguments(method, {**positional, **kwargs})  # an unknown name too: "did you mean"
        return method(*args, **kwargs)

    return wrapper


def _unwrap(hint: Any) -> Any:
    """Past `Annotated` and `X | None` to the hint that names the structure."""
    while True:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        members = [a for a in args if a is not type(None)]
        if origin is Annotated:
            hint = args[0]
        elif origin in (Union, types.UnionType) and len(members) == 1:
            hint = members[0]
        else:
            return hint


def _walk(loc: Sequence, hint: Any) -> tuple[str, Any, int]:
    """Follow an error's location from `hint`: (the key suffix, e.g. `[0].step`, the hint reached,
    how many location parts were keys or indices). pydantic adds a member tag to the location inside
    a union of several types; the walk stops there."""
    suffix, used = "", 0
    for step in loc:
        hint = _unwrap(hint)
        if typing.get_origin(hint) in (Union, types.UnionType):
            break
        args = typing.get_args(hint)
        if isinstance(step, int):
            suffix, hint = f"{suffix}[{step}]", args[0] if args else Any
        else:
            known = typing.get_type_hints(hint, include_extras=True) if is_typeddict(hint) else {}
            suffix, hint = f"{suffix}.{step}", known.get(step, Any)
        used += 1
    return suffix, hint, used


def _expected(message: str) -> str:
    """pydantic's "Input should be a valid integer, unable to ..." -> "must be a valid integer"."""
    return message.replace("Input should be", "must be").split(", unable to")[0]


def config_error(err: ValidationError, key: str, hint: Any, skip: int = 0) -> ConfigError:
    """The first problem pydantic found in the value of `key` (whose hint is `hint`; the first `skip`
    parts of each location lead to it) as one line naming its dotted key: "did you mean" for an
    unknown key of a record (a schedule entry), the alternatives of a union of several types together."""
    errors = err.errors(include_url=False)
    first, loc = errors[0], tuple(errors[0]["loc"])[skip:]
    if first["type"] == "extra_forbidden":
        suffix, record, _ = _walk(loc[:-1], hint)
        known = list(typing.get_type_hints(_unwrap(record))) if is_typeddict(_unwrap(record)) else []
        return ConfigError(_joined(key, f"{suffix}.{loc[-1]}"), unknown_key(str(loc[-1]), known))
    suffix, _, used = _walk(loc, hint)
    if first["type"] == "missing":
        return ConfigError(_joined(key, suffix), "is missing")
    at_union = [e for e in errors if tuple(e["loc"])[skip : skip + used] == loc[:used]]
    alternatives = dict.fromkeys(_expected(e["msg"]).removeprefix("must be ") for e in at_union)
    return ConfigError(_joined(key, suffix), f"must be {' or '.join(alternatives)}, got {first['input']!r}")


def _joined(key: str, suffix: str) -> str:
    return f"{key}{suffix}" if key else suffix.removeprefix(".")
