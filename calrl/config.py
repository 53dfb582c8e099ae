"""YAML recipes -> validated dataclass configs, with command-line overrides.

A recipe is a YAML mapping whose sections map onto dataclasses (``RecipeConfig`` for the calrl
sections, the trainer's ``*Config`` for ``training``). Every key is checked before any model loads:
an unknown key, a wrong type or a missing required field is reported as one line naming the file,
the line and the key (``ConfigError``, exit code 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from calrl.errors import ConfigError


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key (``__lines__`` beside the data)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    loader.flatten_mapping(node)
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        data[key] = loader.construct_object(value_node, deep=True)
        lines[str(key)] = key_node.start_mark.line + 1
    data["__lines__"] = lines
    return data


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_lines(v) for k, v in obj.items() if k != "__lines__"}
    if isinstance(obj, list):
        return [_strip_lines(v) for v in obj]
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping keeping key line numbers under ``__lines__`` (stripped by ``build``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path=str(path))
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(f"invalid YAML: {exc.problem}", path=str(path), line=line) from None
    if data is None:
        raise ConfigError("config is empty", path=str(path))
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping of sections", path=str(path))
    return data


# YAML 1.1 reads these as booleans; on the command line they are words (``--save_strategy no``, as TRL's
# scripts take it), and only true / false are booleans, as in YAML 1.2
_YAML11_BOOLEAN_WORDS = {"yes", "no", "on", "off", "y", "n"}


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.learning_rate=1e-5`` -> (["training", "learning_rate"], 1e-05); values are YAML, except that
    ``yes``/``no``/``on``/``off`` stay words (``save_strategy=no``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().lstrip("-").split(".") if p]
    if not parts:
        raise ConfigError(f"override '{text}' names no key")
    if raw.strip().lower() in _YAML11_BOOLEAN_WORDS:
        return parts, raw.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted keys in the loaded mapping (creating sections as needed).

    ``section={}`` makes sure the section is there: a section the file has keeps its keys.
    """
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        if value == {} and isinstance(node.get(parts[-1]), dict):
            continue
        node[parts[-1]] = value
        node.setdefault("__lines__", {})[parts[-1]] = None  # came from the command line
    return data


def flag_overrides(flags: Sequence[tuple[str, str]], sections: Mapping[str, type],
                   aliases: Mapping[str, str] | None = None) -> list[str]:
    """TRL-style ``--key value`` flags as ``section.key=value`` overrides.

    ``sections`` maps a section name to its dataclass. ``aliases`` maps a flag to the one dotted key it
    sets (``run_name`` -> ``training.run_name``), whatever the sections hold. Any other bare key
    (``learning_rate``; dashes read as underscores) goes to the one section with a field of that name; a
    dotted key (``training.seed``) is kept. A key that no section has, or that several have, is a
    ConfigError with the close names.
    """
    owners: dict[str, list[str]] = {}
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            if f.init:
                owners.setdefault(f.name, []).append(section)
    aliases = dict(aliases or {})
    out = []
    for key, value in flags:
        key = key.replace("-", "_")
        if "." in key:
            out.append(f"{key}={value}")
            continue
        if key in aliases:
            out.append(f"{aliases[key]}={value}")
            continue
        found = owners.get(key, [])
        if len(found) == 1:
            out.append(f"{found[0]}.{key}={value}")
            continue
        if found:
            where = " or ".join(f"--{s}.{key}" for s in found)
            raise ConfigError(f"option --{key} is ambiguous: it names a key of several sections (did you mean {where}?)")
        targets = {**{k: f"{v[0]}.{k}" for k, v in owners.items()}, **aliases}
        close = difflib.get_close_matches(key, list(targets), n=3, cutoff=0.75)
        hint = (" (did you mean " + ", ".join(f"--{c} ({targets[c]})" for c in close) + "?)") if close else ""
        raise ConfigError(f"unknown option --{key}: no recipe section has this key{hint}")
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, coerced) for a YAML value against a dataclass field type (best effort, strict on basics)."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is typing.Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            return (type(None) in args), None
        for arg in args:
            if arg is type(None):
                continue
            ok, coerced = _check_value(value, arg)
            if ok:
                return True, coerced
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(tp), value
    if value is None:
        return False, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML reads 1e-5 as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:  # YAML reads `run_name: 2024` or `abstention_reward: 0.3` as numbers: keep their text
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args), tuple(value)
        inner = args[0] if args else Any
        out = []
        for item in value:
            ok, coerced = _check_value(item, inner)
            if not ok:
                return False, value
            out.append(coerced)
        return True, (tuple(out) if origin is tuple else out)
    if origin in (dict, Mapping) or tp is dict:
        return isinstance(value, dict), value
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict), value
    if isinstance(tp, type) and issubclass(tp, str):  # str enums (e.g. transformers' IntervalStrategy)
        return isinstance(value, str), value
    return True, value  # unknown annotation: leave the check to the dataclass itself


def _dataclass_member(tp: Any) -> type | None:
    """The dataclass in ``tp`` (``Inner`` or ``Inner | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _nested_value(tp: Any, value: Any, *, path: str | None, where: str, ignore_unknown: bool) -> tuple[bool, Any]:
    """Build ``value`` when ``tp`` holds dataclasses: ``Inner``, ``list[Inner]``, ``dict[str, Inner]`` (nested
    to any depth). Returns (False, None) when ``tp`` holds no dataclass, so the caller checks it as a plain value.
    """
    nested = _dataclass_member(tp)
    if nested is not None:
        if isinstance(value, dict):
            return True, build(nested, value, path=path, section=where, ignore_unknown=ignore_unknown)
        return False, None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or len(inner) != 1:
            return False, None
        return _nested_value(inner[0], value, path=path, where=where, ignore_unknown=ignore_unknown)
    if origin is list and args and _holds_dataclass(args[0]) and isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            built, item_value = _nested_value(args[0], item, path=path, where=f"{where}[{i}]",
                                              ignore_unknown=ignore_unknown)
            if not built:
                raise ConfigError(f"key '{where}[{i}]' must be a mapping, got {type(item).__name__}", path=path)
            out.append(item_value)
        return True, out
    if origin is dict and len(args) == 2 and _holds_dataclass(args[1]) and isinstance(value, dict):
        out_map = {}
        for key, item in value.items():
            if key == "__lines__":
                continue
            built, item_value = _nested_value(args[1], item, path=path, where=f"{where}.{key}",
                                              ignore_unknown=ignore_unknown)
            if not built:
                raise ConfigError(f"key '{where}.{key}' must be a mapping, got {type(item).__name__}", path=path)
            out_map[str(key)] = item_value
        return True, out_map
    return False, None


def _holds_dataclass(tp: Any) -> bool:
    if _dataclass_member(tp) is not None:
        return True
    return any(_holds_dataclass(a) for a in typing.get_args(tp))


def build(cls: type, data: Mapping[str, Any] | None, *, path: str | None = None,
          section: str = "", required: Sequence[str] = (), ignore_unknown: bool = False) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, checking every key and type first.

    Fields typed as dataclasses, lists of them or mappings of them are built recursively. Unknown keys
    are an error, or skipped with ``ignore_unknown`` (for files a newer calrl may have written).
    """
    data = dict(data or {})
    lines: dict[str, int | None] = data.pop("__lines__", {}) or {}
    prefix = f"{section}." if section else ""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - third-party dataclasses may use unresolvable annotations
        hints = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        line = lines.get(str(key))
        if key not in fields:
            if ignore_unknown:
                continue
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown key '{prefix}{key}'{hint}", path=path, line=line)
        tp = hints.get(key, fields[key].type)
        built, nested_value = _nested_value(tp, value, path=path, where=f"{prefix}{key}",
                                            ignore_unknown=ignore_unknown)
        if built:
            kwargs[key] = nested_value
            continue
        ok, coerced = _check_value(_strip_lines(value), tp)
        if not ok:
            raise ConfigError(
                f"key '{prefix}{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}",
                path=path, line=line,
            )
        kwargs[key] = coerced
    for key in required:
        if kwargs.get(key) in (None, ""):
            raise ConfigError(f"missing required key '{prefix}{key}'", path=path)
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and n not in kwargs]
    if missing:
        raise ConfigError(f"missing required key '{prefix}{missing[0]}'", path=path)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"section '{section or cls.__name__}': {str(exc).splitlines()[0]}", path=path) from None
