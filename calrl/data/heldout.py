"""Held-out evaluation sets: load items to ask a model, from a local file or a standard set by name.

A SPEC is one of

* a local file (JSONL, JSON, CSV, Parquet) or a ``datasets.save_to_disk`` folder with columns
  ``question``, ``reference`` (string or list), optional ``choices`` (list), ``slice`` (string or
  object) and ``id`` (generated from the row number when absent; see :mod:`calrl.data.readers`);
* a standard set by name (``gsm8k``, ``triviaqa``, ``sciq``, ``commonsense_qa``, ``truthful_qa``,
  ``mmlu_professional``, ``bbh_object_counting``) or by an lm-evaluation-harness task name that names the
  same data (``mmlu_professional_law``: one MMLU subject, ``truthfulqa_mc1``,
  ``bbh_zeroshot_object_counting`` ...; the ``aliases`` of each definition), loaded from the Hugging Face
  hub with ``datasets.load_dataset(hub_id, config, split=...)``. Offline (``HF_HUB_OFFLINE=1``) or with
  the hub unreachable, only the local ``datasets`` cache is tried, and a miss fails at once
  (:mod:`calrl.data.hub`);
* ``calrl:PATH``: a file shipped in the calrl package (``calrl:data/tiny/eval.jsonl``), as recipes name it;
* ``NAME:PATH``: a standard set's mapping (NAME may be an alias) applied to a local copy in the hub's
  schema (a save_to_disk folder, Parquet, JSON/JSONL, CSV, a folder of such files) or in the set's
  original format (GSM8K JSONL, MMLU header-less CSV, a BIG-Bench ``task.json``).

``limit`` keeps the first N items, or with ``sample_seed`` a stratified shuffled sample
(:mod:`calrl.data.sampling`). The definitions of the standard sets are the YAML files in
``calrl/data/heldout_sets/`` (the only source of truth; ``evals/heldout/README.md`` documents their keys).
"""

from __future__ import annotations

import contextlib
import random
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from calrl.data.items import LETTERS, EvalItem
from calrl.data.package import package_path
from calrl.data.readers import (
    DATA_SUFFIXES,
    MISSING,
    RowError,
    cell_text,
    field_value,
    is_saved_dataset,
    load_generic,
    load_saved,
    read_rows,
    require,
)
from calrl.data.sampling import stratified_sample
from calrl.errors import ConfigError, InputError
from calrl.grading.normalize import number_to_words

NUMBER_WORDS_BELOW = 10**6  # ``number_words: true`` adds the words of integer references below this

__all__ = ["LETTERS", "EvalItem", "HeldoutSet", "available_sets", "dataset_table", "get_heldout_set",
           "load_eval_items", "parse_definition", "resolve_set_name"]


@dataclass(frozen=True)
class HeldoutSet:
    """The definition of a standard held-out set: where it lives and how its rows map to EvalItems.

    ``aliases`` maps other names of the same data (lm-evaluation-harness task names) to the configs they
    keep (None: all of them).
    """

    name: str
    hub_id: str
    configs: tuple[str | None, ...]
    split: str
    question: str
    answer: dict[str, Any]
    slices: dict[str, dict[str, Any]]
    id_field: str | None = None
    csv_columns: tuple[str, ...] | None = None
    licence: str | None = None
    aliases: dict[str, tuple[str, ...] | None] | None = None


# ----------------------------------------------------------------------------------------------------
# Definitions


def available_sets() -> list[str]:
    """Names of the standard held-out sets."""
    return sorted(_definitions())


def get_heldout_set(name: str) -> HeldoutSet:
    """The definition of a standard set (by its name or an alias); InputError for an unknown name."""
    return resolve_set_name(name)[0]


def resolve_set_name(name: str) -> tuple[HeldoutSet, tuple[str | None, ...]]:
    """The set a name or alias stands for and the configs it keeps; InputError for an unknown name."""
    defs = _definitions()
    if name in defs:
        return defs[name], defs[name].configs
    aliases = _aliases()
    if name in aliases:
        defn, configs = aliases[name]
        return defn, configs if configs is not None else defn.configs
    raise InputError(f"unknown held-out set '{name}' (known: {', '.join(sorted(defs))}; "
                     f"calrl eval --list-datasets lists them with their aliases){_did_you_mean(name)}")


def _did_you_mean(name: str) -> str:
    import difflib  # 2 ms: only a misspelt name needs it; this module is on calrl --help's path

    close = difflib.get_close_matches(name, [*_definitions(), *_aliases()], n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _is_set_name(name: str) -> bool:
    return name in _definitions() or name in _aliases()


def dataset_table() -> list[dict[str, str]]:
    """One row per standard set, for ``calrl eval --list-datasets``: name, hub id and configs, split,
    slices, aliases, licence."""
    rows = []
    for name in available_sets():
        d = _definitions()[name]
        configs = ", ".join(c for c in d.configs if c)
        rows.append({"name": name, "hub": d.hub_id + (f" ({configs})" if configs else ""), "split": d.split,
                     "slices": ", ".join(d.slices) or "-", "aliases": ", ".join(sorted(d.aliases or {})) or "-",
                     "licence": d.licence or "-"})
    return rows


@cache
def _definitions() -> dict[str, HeldoutSet]:
    folder = resources.files("calrl.data") / "heldout_sets"
    defs = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            defn = parse_definition(yaml.safe_load(entry.read_text(encoding="utf-8")), source=entry.name)
            defs[defn.name] = defn
    return defs


@cache
def _aliases() -> dict[str, tuple[HeldoutSet, tuple[str, ...] | None]]:
    out: dict[str, tuple[HeldoutSet, tuple[str, ...] | None]] = {}
    for defn in _definitions().values():
        for alias, configs in (defn.aliases or {}).items():
            if alias in out or alias in _definitions():
                raise ConfigError(f"alias '{alias}' names two sets", path=f"{defn.name}.yaml", field="aliases")
            out[alias] = (defn, configs)
    return out


_ANSWER_KINDS = {"text", "choice_columns", "choice_list"}


def parse_definition(raw: Any, *, source: str) -> HeldoutSet:
    """Validate one YAML definition (a mapping) and build a HeldoutSet; ConfigError when malformed."""
    if not isinstance(raw, dict):
        raise ConfigError("a held-out set definition must be a mapping", path=source)
    required = ("name", "hub_id", "configs", "split", "question", "answer")
    for key in required:
        if key not in raw:
            raise ConfigError("missing key", path=source, field=key)
    known = {*required, "slices", "id", "csv_columns", "licence", "aliases"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}", path=source)
    answer = raw["answer"]
    if not isinstance(answer, dict) or answer.get("kind") not in _ANSWER_KINDS:
        raise ConfigError(f"'kind' must be one of {sorted(_ANSWER_KINDS)}", path=source, field="answer")
    if answer["kind"] == "choice_list":
        ways = [k for k in ("answer_index", "answer_label", "correct_flags") if k in answer]
        if len(ways) != 1 or ("answer_label" in answer) != ("labels" in answer):
            raise ConfigError("choice_list needs exactly one of answer_index, answer_label (with labels), "
                              "correct_flags", path=source, field="answer")
    configs = raw["configs"]
    if not isinstance(configs, list) or not configs:
        raise ConfigError("must be a non-empty list (null for no config)", path=source, field="configs")
    slices = raw.get("slices") or {}
    for slice_name, spec in slices.items():
        if not isinstance(spec, dict) or ("field" in spec) == ("count_lines" in spec):
            raise ConfigError("needs exactly one of 'field' or 'count_lines'", path=source,
                              field=f"slices.{slice_name}")
    return HeldoutSet(
        name=str(raw["name"]), hub_id=str(raw["hub_id"]), configs=tuple(configs), split=str(raw["split"]),
        question=str(raw["question"]), answer=dict(answer), slices=dict(slices), id_field=raw.get("id"),
        csv_columns=tuple(raw["csv_columns"]) if raw.get("csv_columns") else None,
        licence=raw.get("licence"), aliases=_parse_aliases(raw.get("aliases"), configs, source),
    )


def _parse_aliases(raw: Any, configs: list[Any], source: str) -> dict[str, tuple[str, ...] | None] | None:
    """``aliases``: a mapping of name to null (the whole set) or to a list of the set's configs."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("must map alias names to null or a list of configs", path=source, field="aliases")
    out: dict[str, tuple[str, ...] | None] = {}
    for alias, kept in raw.items():
        if kept is not None and (not isinstance(kept, list) or not kept or any(c not in configs for c in kept)):
            raise ConfigError(f"alias '{alias}': expected null or a list of this set's configs {configs}",
                              path=source, field="aliases")
        out[str(alias)] = tuple(kept) if kept is not None else None
    return out


# ----------------------------------------------------------------------------------------------------
# Entry point


def load_eval_items(spec: str, *, split: str | None = None, limit: int | None = None,
                    sample_seed: int | None = None) -> list[EvalItem]:
    """Load the items of SPEC (a local file or folder, a standard set name or alias, or ``NAME:PATH``).

    ``split`` picks a split of a hub set, a ``save_to_disk`` DatasetDict or a folder of split files
    (default: the set's own split). ``limit`` keeps the first N items; with ``sample_seed``, a sample of N
    stratified by slice (every slice value in proportion, each at least once when N allows) in a seeded
    shuffled order. Raises InputError on bad input.
    """
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    spec = str(spec).strip()
    if not spec:
        raise InputError("empty dataset spec")
    spec = package_path(spec)  # calrl:PATH, a file shipped with calrl, named as recipes name it
    name, sep, rest = spec.partition(":")
    if sep and _is_set_name(name):
        if not rest:
            raise InputError(f"'{spec}': give the path of a local copy after '{name}:'")
        defn, configs = resolve_set_name(name)
        items = _load_named(defn, configs, split=split, local=Path(rest))
    elif Path(spec).exists():
        items = load_generic(Path(spec), split=split)
    elif _is_set_name(spec):
        defn, configs = resolve_set_name(spec)
        items = _load_named(defn, configs, split=split, local=None)
    elif "/" in spec or "\\" in spec or Path(spec).suffix:  # a path: the list of set names would be noise
        raise InputError(f"dataset '{spec}': no such file or folder (NAME:PATH reads a local copy of a known set)")
    else:
        raise InputError(f"dataset '{spec}' is neither an existing file or folder nor a known set "
                         f"(known: {', '.join(available_sets())}, and lm-evaluation-harness aliases listed by "
                         f"calrl eval --list-datasets; or NAME:PATH for a local copy){_did_you_mean(name)}")
    if not items:
        raise InputError(f"dataset '{spec}' has no items")
    _check_unique_ids(items, spec)
    if limit is None:
        return items
    return stratified_sample(items, limit, seed=sample_seed) if sample_seed is not None else items[:limit]


def _check_unique_ids(items: list[EvalItem], spec: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"dataset '{spec}': duplicate id '{item.id}'")
        seen.add(item.id)


# ----------------------------------------------------------------------------------------------------
# Standard sets


@dataclass
class _Group:
    """Rows of one config (or one file) of a set: ids count rows within a group."""

    config: str | None
    source: str
    rows: list[dict[str, Any]]


def _load_named(defn: HeldoutSet, configs: tuple[str | None, ...], *, split: str | None,
                local: Path | None) -> list[EvalItem]:
    """The items of ``defn`` restricted to ``configs`` (an alias may keep only some); ids are those of the
    whole set, so a subject loaded through its alias keeps the ids it has in the whole set."""
    split = split or defn.split
    groups = _hub_groups(defn, configs, split) if local is None else _local_groups(defn, configs, local, split)
    multi = len(defn.configs) > 1
    items = []
    for group in groups:
        for index, row in enumerate(group.rows):
            if group.config is not None:
                row.setdefault("__config__", group.config)
            if defn.id_field:
                raw_id = field_value(row, defn.id_field)
                if raw_id is MISSING or raw_id in (None, ""):
                    raise InputError(f"row {index}: missing id column", path=group.source, field=defn.id_field)
                item_id = str(raw_id)
            elif multi and group.config is not None:
                item_id = f"{defn.name}-{group.config}-{split}-{index}"
            else:
                item_id = f"{defn.name}-{split}-{index}"
            try:
                items.append(_map_row(defn, row, item_id))
            except RowError as err:
                raise InputError(f"row {index}: {err.message} (expected the schema of {defn.hub_id})",
                                 path=group.source, field=err.field) from None
    return items


def _hub_groups(defn: HeldoutSet, configs: tuple[str | None, ...], split: str) -> list[_Group]:
    # lazy: datasets (0.8 s), and calrl.data.hub with it, which calrl eval --help must not load (this module
    # is on its path: tests/test_cli_startup.py)
    import datasets

    from calrl.data.hub import hub_unavailable, offline_mode

    unavailable = hub_unavailable()  # offline or unreachable: the local cache only, no 25 s of retries
    groups = []
    for config in configs:
        where = defn.hub_id + (f" ({config})" if config else "")
        try:
            with offline_mode() if unavailable else contextlib.nullcontext():
                ds = datasets.load_dataset(defn.hub_id, config, split=split)
        except Exception as exc:  # noqa: BLE001 - any hub/network/cache failure is reported as one line
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            if unavailable:
                raise InputError(
                    f"cannot load '{defn.name}' ({where}, split '{split}'): {unavailable} and the set is not "
                    f"in the local datasets cache. Pass a local copy as '{defn.name}:PATH'") from None
            raise InputError(
                f"cannot load '{defn.name}' from the Hugging Face hub {where}, split '{split}': {reason}. "
                f"If the hub is unreachable, pass a local copy as '{defn.name}:PATH'"
            ) from None
        groups.append(_Group(config, f"{where}[{split}]", ds.to_list()))
    return groups


def _local_groups(defn: HeldoutSet, kept: tuple[str | None, ...], path: Path, split: str) -> list[_Group]:
    if not path.exists():
        raise InputError("no such file or folder", path=str(path))
    if path.is_dir() and is_saved_dataset(path):
        if kept != defn.configs:
            raise InputError(f"a save_to_disk folder holds the whole set: load it as '{defn.name}:PATH', or give "
                             f"a file or folder of per-config files for {', '.join(str(c) for c in kept)}",
                             path=str(path))
        return [_Group(None, str(path), load_saved(path, split, preferred=defn.split))]
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
    )
    if not files:
        raise InputError(f"no data files ({', '.join(DATA_SUFFIXES)}) in the folder", path=str(path))
    configs = [c for c in defn.configs if c]
    matched = [(f, _config_of(f, configs)) for f in files]
    if path.is_file() and matched[0][1] is None and len(kept) == 1:  # one file named through a one-config alias
        matched = [(path, kept[0])]
    if path.is_dir():  # a folder of split and/or per-config files: keep the split's, then the configs'
        matched = [(f, c) for f, c in matched if split in f.stem] or matched
        matched = [(f, c) for f, c in matched if c] or matched
    if kept != defn.configs:  # an alias keeping some configs: their files only
        matched = [(f, c) for f, c in matched if c in kept]
        if not matched:
            raise InputError(f"no file for {', '.join(str(c) for c in kept)} here (file names must contain the "
                             "config name)", path=str(path))
    return [_Group(c, str(f), read_rows(f, csv_columns=defn.csv_columns, question=defn.question))
            for f, c in matched]


def _config_of(file: Path, configs: list[str]) -> str | None:
    hits = [c for c in configs if c in file.stem]
    return max(hits, key=len) if hits else None


def _map_row(defn: HeldoutSet, row: dict[str, Any], item_id: str) -> EvalItem:
    question = cell_text(row, defn.question)
    if not question:
        raise RowError("empty question", defn.question)
    kind = defn.answer["kind"]
    if kind == "text":
        reference, choices = _text_answer(defn.answer, row), None
    else:
        reference, choices = _choice_answer(defn.answer, row, item_id)
    return EvalItem(item_id, question, reference, choices, _slices(defn.slices, row))


def _text_answer(spec: dict[str, Any], row: dict[str, Any]) -> list[str]:
    fields = spec["field"] if isinstance(spec["field"], list) else [spec["field"]]
    values: list[str] = []
    for path in fields:
        value = require(row, path)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            text = str(v).strip()
            if marker := spec.get("after"):
                if marker not in text:
                    raise RowError(f"no '{marker.strip()}' marker before the final answer", path)
                text = text.rsplit(marker, 1)[1].strip()
            values.append(text.replace(",", "") if marker and _is_number(text.replace(",", "")) else text)
    if spec.get("number_words"):
        values += [number_to_words(int(v)) for v in values if v.isdigit() and int(v) < NUMBER_WORDS_BELOW]
    reference = [v for v in dict.fromkeys(values) if v]
    if not reference:
        raise RowError("no reference answer", str(spec["field"]))
    return reference


def _choice_answer(spec: dict[str, Any], row: dict[str, Any], item_id: str) -> tuple[list[str], list[str]]:
    if spec["kind"] == "choice_columns":
        options = [cell_text(row, c) for c in spec["columns"]]
        correct = int(spec["correct"])
    else:
        raw = require(row, spec["choices"])
        if not isinstance(raw, (list, tuple)) or len(raw) < 2:
            raise RowError("expected a list of at least two options", spec["choices"])
        options = [str(o).strip() for o in raw]
        correct = _correct_index(spec, row, len(options))
    if len(options) > len(LETTERS):
        raise RowError(f"{len(options)} options; at most {len(LETTERS)} are supported")
    if spec.get("shuffle_seed") is not None:
        order = list(range(len(options)))
        random.Random(f"{spec['shuffle_seed']}:{item_id}").shuffle(order)
        options, correct = [options[j] for j in order], order.index(correct)
    return [LETTERS[correct], options[correct]], options


def _correct_index(spec: dict[str, Any], row: dict[str, Any], n: int) -> int:
    if "correct_flags" in spec:
        flags = require(row, spec["correct_flags"])
        hits = [i for i, f in enumerate(flags) if int(f) == 1]
        if len(flags) != n or len(hits) != 1:
            raise RowError("expected exactly one correct flag per option", spec["correct_flags"])
        return hits[0]
    if "answer_label" in spec:
        labels = [str(x).strip() for x in require(row, spec["labels"])]
        key = cell_text(row, spec["answer_label"])
        if len(labels) != n or key not in labels:
            raise RowError(f"answer key '{key}' is not one of the labels {labels}", spec["answer_label"])
        return labels.index(key)
    value = require(row, spec["answer_index"])
    text = str(value).strip()
    if isinstance(value, int) or text.isdigit():
        index = int(text)
    elif len(text) == 1 and text.upper() in LETTERS:
        index = LETTERS.index(text.upper())
    else:
        raise RowError(f"answer '{text}' is neither an index nor a letter", spec["answer_index"])
    if not 0 <= index < n:
        raise RowError(f"answer index {index} outside the {n} options", spec["answer_index"])
    return index


def _slices(specs: dict[str, dict[str, Any]], row: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, spec in specs.items():
        if "count_lines" in spec:
            text = str(require(row, spec["count_lines"]))
            if marker := spec.get("before"):
                text = text.rsplit(marker, 1)[0]
            count = sum(1 for line in text.splitlines() if line.strip())
            cap = spec.get("max")
            out[name] = f"{cap}+" if cap is not None and count >= cap else str(count)
            continue
        paths = spec["field"] if isinstance(spec["field"], list) else [spec["field"]]
        value = next((v for p in paths if (v := field_value(row, p)) not in (MISSING, None, "")), None)
        if value is None:
            if spec.get("optional"):
                continue
            raise RowError("missing slice value", str(spec["field"]))
        value = str(value).strip()
        if (pattern := spec.get("pattern")) and (m := re.search(pattern, value)):
            value = m.group(1) if m.groups() else m.group(0)
        out[name] = value
    return out


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?", text) is not None
