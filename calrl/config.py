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

from calrl.errors import ConfigError, did_you_mean
from calrl.io import check_input, read_text


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key (``__lines__`` beside the data)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    own: dict[str, int] = {}  # a key written twice in one mapping (not one a merge key ``<<`` brings) is an error
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            line = key_node.start_mark.line + 1
            if key_node.value in own:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key_node.value}' (also on line {own[key_node.value]})",
                    key_node.start_mark)
            own[key_node.value] = line
    loader.flatten_mapping(node)
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict) or key == "__lines__":
            what = "'__lines__' is reserved" if key == "__lines__" else f"not {type(key).__name__} {key!r}"
            raise yaml.constructor.ConstructorError(None, None, f"a key must be a name, {what}", key_node.start_mark)
        data[key] = loader.construct_object(value_node, deep=True)
        lines[str(key)] = key_node.start_mark.line + 1
    data["__lines__"] = lines
    return data


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def strip_lines(obj: Any) -> Any:
    """``obj`` as plain data: the ``__lines__`` bookkeeping of :func:`load_yaml` taken out of every mapping."""
    if isinstance(obj, dict):
        return {k: strip_lines(v) for k, v in obj.items() if k != "__lines__"}
    if isinstance(obj, list):
        return [strip_lines(v) for v in obj]
    return obj


#: Most values a recipe may hold once its aliases (``*name``) are expanded: a few aliases of aliases (a
#: "billion laughs") would otherwise expand to 10^9 values when the recipe is checked.
MAX_YAML_VALUES = 100_000


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping keeping key line numbers under ``__lines__`` (stripped by ``build``).

    Every problem is one ConfigError naming the file (and the line where there is one): not UTF-8, invalid
    YAML, characters YAML does not allow, a key given twice in a mapping, nesting too deep, aliases
    expanding to more than ``MAX_YAML_VALUES`` values, an integer too long to read, a lone surrogate.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError("config file not found", path=str(path))
    text = read_text(check_input(path, option="--config"))
    where = {"path": str(path)}
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        hint = " (indent with spaces: YAML does not allow tabs there)" if "'\\t'" in str(exc.problem) else ""
        raise ConfigError(f"invalid YAML: {exc.problem or exc.context}{hint}", **where,
                          line=mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other control characters)
        raise ConfigError(f"invalid YAML: character U+{exc.character:04X} is not allowed", **where,
                          line=text.count("\n", 0, exc.position) + 1) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", **where) from None
    except ValueError as exc:  # an integer over Python's int-to-text limit
        raise ConfigError(f"invalid YAML: {str(exc).split(';')[0]}; write it as a string", **where) from None
    _check_expanded(data, str(path))
    if data is None:
        raise ConfigError("config is empty", path=str(path))
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping of sections", path=str(path))
    return data


# YAML 1.1 reads these as booleans; on the command line they are words (``--save_strategy no``, as TRL's
# scripts take it), and only true / false are booleans, as in YAML 1.2
_YAML11_BOOLEAN_WORDS = {"yes", "no", "on", "off", "y", "n"}


def _check_expanded(data: Any, path: str) -> None:
    """A ConfigError when ``data`` (as loaded, aliases shared) expands to more than ``MAX_YAML_VALUES`` values
    or holds a string with a lone UTF-16 surrogate (a ``"\\ud800"`` escape: not Unicode text)."""
    sizes: dict[int, int] = {}

    def size(value: Any, key: str, line: int | None) -> int:
        if id(value) in sizes:
            return sizes[id(value)]
        total = 1
        if isinstance(value, dict):
            lines = value.get("__lines__", {})
            for k, v in value.items():
                if k != "__lines__":
                    name, at = f"{key}.{k}" if key else str(k), lines.get(str(k), line)
                    total += size(k, name, at) + size(v, name, at)
        elif isinstance(value, list):
            total += sum(size(v, f"{key}[{i}]", line) for i, v in enumerate(value))
        elif isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value):
            raise ConfigError(f"key '{key}': a lone UTF-16 surrogate escape (not Unicode text)", path=path, line=line)
        if total > MAX_YAML_VALUES:
            raise ConfigError(f"the recipe expands to more than {MAX_YAML_VALUES:,} values (aliases of aliases?)",
                              path=path, line=line)
        sizes[id(value)] = total
        return total

    size(data, "", None)


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
    except (yaml.YAMLError, ValueError, RecursionError):  # not YAML, or too deep or too long a number: the text
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
    """How an error names a field's type: ``one of 'a', 'b'`` for a Literal (also inside an Optional), else
    the type's name."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) if a is not type(None) else "null" for a in typing.get_args(tp)]
        return " or ".join(parts)
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _literal_hint(value: Any, tp: Any) -> str:
    """`` (did you mean 'x'?)`` for a string close to one of a Literal field's values."""
    choices = [a for t in (typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,))
               if typing.get_origin(t) is typing.Literal for a in typing.get_args(t) if isinstance(a, str)]
    return did_you_mean(value, choices) if isinstance(value, str) and choices else ""


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
    if tp is int:  # a count or a seed: torch, numpy and the tokenizers take 64-bit integers
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63, value
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
        ok, coerced = _check_value(strip_lines(value), tp)
        if not ok:
            big = isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63
            got = f"an integer of {len(str(abs(value)))} digits, more than 64 bits hold" if big else \
                f"{type(value).__name__} {value!r}"
            raise ConfigError(f"key '{prefix}{key}' must be {_type_name(tp)}, got {got}{_literal_hint(value, tp)}",
                              path=path, line=line)
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
    except ConfigError as exc:  # the dataclass' own check names a field: name its key and line here
        if exc.path is not None or not exc.field or exc.field not in fields:
            raise
        raise ConfigError(f"key '{prefix}{exc.field}': {exc.reason}", path=path, line=lines.get(exc.field)) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"section '{section or cls.__name__}': {str(exc).splitlines()[0]}", path=path) from None
