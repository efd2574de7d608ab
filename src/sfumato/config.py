"""Frozen configs that round-trip through `config.json` / `scheduler_config.json`.

A class records its `__init__` arguments with `@register_to_config`; they become `obj.config`, a
read-only mapping written to disk with the keys diffusers writes. Loading tolerates keys from newer
versions or sibling classes: they stay in the config (and in the file when saved) but are not passed
to `__init__`.
"""

from __future__ import annotations

import collections.abc
import copy
import functools
import inspect
import json
import logging
import numbers
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from ._version import DIFFUSERS_FORMAT_VERSION, __version__
from .files import atomic_write_text

logger = logging.getLogger(__name__)

# Keys that describe the file rather than the object; never passed to `__init__`.
_FILE_KEYS = ("_class_name", "_diffusers_version", "_sfumato_version", "_use_default_values")


class FrozenConfigError(AttributeError, TypeError):
    """Raised on any attempt to change a config in place."""


def _frozen(value: Any) -> Any:
    """Deep read-only copy of a JSON-like value: lists become tuples, dicts FrozenConfigs."""
    if isinstance(value, FrozenConfig):
        return value
    if isinstance(value, dict):
        return FrozenConfig(value)
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch arrays
        return _frozen(value.tolist())
    return value


class FrozenConfig(dict):
    """A read-only dict whose keys are also attributes (`config.sample_size`).

    To change a value, build a new object: `Cls.from_config(obj.config, key=value)`.
    """

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        items = dict(*args, **kwargs)
        dict.__init__(self, {k: _frozen(v) for k, v in items.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def _refuse(self, *_args: Any, **_kwargs: Any) -> typing.NoReturn:
        raise FrozenConfigError(
            "configs are frozen; build a new object with `from_config(config, key=value)` instead "
            "(e.g. `EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing='trailing')`)"
        )

    __setattr__ = __delattr__ = __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return (FrozenConfig, (dict(self),))

    def __copy__(self) -> FrozenConfig:
        return self

    def __deepcopy__(self, memo: dict) -> FrozenConfig:
        return FrozenConfig(copy.deepcopy(dict(self), memo))

    def __repr__(self) -> str:
        return f"FrozenConfig({dict.__repr__(self)})"


# --------------------------------------------------------------------------- type checks


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool:
    """Lenient structural check of a JSON-like value against a type hint; unknown hints pass."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        # JSON turns tuples into lists, so both spellings are accepted for either hint.
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
        return all(_matches(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint) or (hint.__module__ == "numpy" and isinstance(value, (list, tuple)))
    return True


def _only_literals(hint: Any) -> bool:
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return all(typing.get_origin(a) is typing.Literal or a is type(None) for a in args)


@functools.cache
def _init_hints(init: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - unresolvable annotations only disable checking
        logger.debug("cannot resolve type hints of %s; config types are not checked", init.__qualname__)
        return {}


def check_config_types(cls: type, values: dict[str, Any], init: Any = None) -> None:
    """Raise a TypeError / ValueError naming the first key whose value does not fit its annotation."""
    init = init or getattr(cls.__init__, "__wrapped__", cls.__init__)
    hints = _init_hints(init)
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None or _matches(value, hint):
            continue
        if _only_literals(hint):
            raise ValueError(f"{cls.__name__}: config key {key!r} must be {_describe(hint)}; got {value!r}")
        raise TypeError(
            f"{cls.__name__}: config key {key!r} must be {_describe(hint)}; "
            f"got {value!r} of type {type(value).__name__}"
        )


# --------------------------------------------------------------------------- decorator


def _recorded_parameters(init: Any, cls: type) -> list[str]:
    skip = set(getattr(cls, "ignore_for_config", ()))
    return [
        name
        for name, p in inspect.signature(init).parameters.items()
        if name != "self"
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and name not in skip
    ]


def config_parameters(cls: type) -> list[str]:
    """Names of the `__init__` arguments that are recorded in the config."""
    return _recorded_parameters(getattr(cls.__init__, "__wrapped__", cls.__init__), cls)


def register_to_config(init: Any) -> Any:
    """Decorate `__init__` so that its arguments (with defaults filled in) become `self.config`."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        # Only the outermost decorated __init__ registers: a super().__init__ call must not overwrite it.
        if "_internal_dict" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            explicit = set(bound.arguments)
            bound.apply_defaults()
            values = {n: bound.arguments[n] for n in _recorded_parameters(init, type(self))}
            check_config_types(type(self), values, init)
            values["_use_default_values"] = [n for n in values if n not in explicit]
            object.__setattr__(self, "_internal_dict", FrozenConfig(values))
        init(self, *args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- mixin


_noted_unknown_keys: set[tuple[str, frozenset[str]]] = set()


def _note_unknown_keys(cls: type, keys: set[str]) -> None:
    """Log once per class and key set: configs from newer versions are normal, not an error."""
    marker = (cls.__qualname__, frozenset(keys))
    if keys and marker not in _noted_unknown_keys:
        _noted_unknown_keys.add(marker)
        logger.debug(
            "%s ignores config keys %s (kept in its config and in saved files)", cls.__name__, sorted(keys)
        )


def to_json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":
        return str(value).removeprefix("torch.")
    return value


class ConfigMixin:
    """Base for everything with a config: `from_config`, `save_config`, `load_config`, `.config`."""

    config_name: ClassVar[str | None] = None
    ignore_for_config: ClassVar[tuple[str, ...]] = ()
    # Names of classes whose configs this class accepts without noting their keys as unknown.
    _compatibles: ClassVar[tuple[str, ...]] = ()

    @property
    def config(self) -> FrozenConfig:
        try:
            return self.__dict__["_internal_dict"]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no config: decorate its __init__ with @register_to_config"
            ) from None

    def register_to_config(self, **values: Any) -> None:
        """Add or replace config entries (used for keys that are kept but not passed to `__init__`)."""
        merged = {**self.__dict__.get("_internal_dict", {}), **values}
        object.__setattr__(self, "_internal_dict", FrozenConfig(merged))

    @classmethod
    def extract_init_dict(
        cls, config: dict[str, Any], **overrides: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Split a config into (`__init__` kwargs, kept-but-unused keys, unused overrides)."""
        config = dict(config)
        # Keys that the source object left at *its* defaults take *our* defaults instead.
        for key in config.pop("_use_default_values", ()) or ():
            if key not in overrides:
                config.pop(key, None)
        expected = config_parameters(cls)
        init_kwargs = {k: config[k] for k in expected if k in config}
        unused_overrides = {}
        for key, value in overrides.items():
            if key in expected:
                init_kwargs[key] = value
            else:
                unused_overrides[key] = value
        # The writer's version stays readable (pipelines patch configs written by old releases);
        # saving always writes the current one.
        hidden = {k: v for k, v in config.items() if k not in expected and k not in _FILE_KEYS}
        for key in ("_diffusers_version", "_sfumato_version"):
            if key in config:
                hidden[key] = config[key]
        unknown = {k for k in hidden if not k.startswith("_")} - _compatible_keys(cls)
        _note_unknown_keys(cls, unknown)
        return init_kwargs, hidden, unused_overrides

    @classmethod
    def from_config(
        cls, config: dict[str, Any] | None = None, return_unused_kwargs: bool = False, **overrides: Any
    ) -> Any:
        """Build an object from a config mapping, with `overrides` replacing its values."""
        if isinstance(config, (str, os.PathLike)):
            raise TypeError(
                f"{cls.__name__}.from_config takes a config mapping, not the path {str(config)!r}; "
                f"use {cls.__name__}.from_pretrained(path) or {cls.__name__}.load_config(path)"
            )
        if isinstance(config, ConfigMixin):
            config = config.config
        init_kwargs, hidden, unused = cls.extract_init_dict(dict(config or {}), **overrides)
        obj = cls(**init_kwargs)
        if hidden:
            obj.register_to_config(**hidden)
        return (obj, unused) if return_unused_kwargs else obj

    @classmethod
    def load_config(
        cls,
        id_or_folder: str | os.PathLike,
        subfolder: str | None = None,
        config_name: str | None = None,
        **hub_kwargs: Any,
    ) -> dict[str, Any]:
        """Read this class's config file from a folder, a file, or a Hub id."""
        name = config_name or cls.config_name
        if name is None:
            raise NotImplementedError(f"{cls.__name__} does not define `config_name`")
        return read_config_file(id_or_folder, name, subfolder=subfolder, **hub_kwargs)

    def to_json_string(self) -> str:
        data = {k: v for k, v in self.config.items() if k != "_use_default_values"}
        data["_class_name"] = type(self).__name__
        data["_diffusers_version"] = DIFFUSERS_FORMAT_VERSION
        data["_sfumato_version"] = __version__
        return json.dumps(to_json_value(data), indent=2, sort_keys=True) + "\n"

    def save_config(self, save_directory: str | os.PathLike) -> Path:
        """Write the config file into `save_directory` (created if needed); returns its path."""
        if self.config_name is None:
            raise NotImplementedError(f"{type(self).__name__} does not define `config_name`")
        folder = Path(save_directory)
        if folder.is_file():
            raise FileExistsError(f"cannot save a config into {folder}: it is a file, expected a folder")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.config_name
        atomic_write_text(path, self.to_json_string())
        return path

    def __getattr__(self, name: str) -> Any:
        # diffusers lets `scheduler.num_train_timesteps` read the config; keep that working.
        internal = self.__dict__.get("_internal_dict")
        if internal is not None and name in internal:
            return internal[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


@functools.cache
def _compatible_keys(cls: type) -> frozenset[str]:
    keys: set[str] = set()
    if not cls._compatibles:
        return frozenset()
    from . import _lazy_lookup

    for name in cls._compatibles:
        other = _lazy_lookup(name)
        if other is not None:
            keys.update(config_parameters(other))
    return frozenset(keys)


def read_config_file(
    id_or_folder: str | os.PathLike, config_name: str, subfolder: str | None = None, **hub_kwargs: Any
) -> dict[str, Any]:
    """Parse `config_name` from a file path, a local folder (`subfolder` or flat layout) or a Hub id."""
    from .hub import resolve_file

    path = resolve_file(id_or_folder, config_name, subfolder=subfolder, **hub_kwargs)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a valid JSON config file: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data
