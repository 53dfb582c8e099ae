"""Held-out evaluation sets: load items to ask a model, from a local file or a standard set by name.

A SPEC is one of

* a local file (JSONL, JSON, CSV, Parquet) or a ``datasets.save_to_disk`` folder with columns
  ``question``, ``reference`` (string or list), optional ``choices`` (list), ``slice`` (string or
  object) and ``id`` (generated from the row number when absent);
* a standard set by name (``gsm8k``, ``triviaqa``, ``sciq``, ``commonsense_qa``, ``truthful_qa``,
  ``mmlu_professional``, ``bbh_object_counting``), loaded from the Hugging Face hub with
  ``datasets.load_dataset(hub_id, config, split=...)``;
* ``NAME:PATH``: a standard set's mapping applied to a local copy in the hub's schema (a save_to_disk
  folder, Parquet, JSON/JSONL, CSV, a folder of such files) or in the set's original format (GSM8K
  JSONL, MMLU header-less CSV, a BIG-Bench ``task.json``).

The definitions of the standard sets are the YAML files in ``calrl/data/heldout_sets/`` (the only
source of truth; ``evals/heldout/README.md`` documents their keys).
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from calrl.errors import ConfigError, InputError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
_MISSING = object()
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


@dataclass
class EvalItem:
    """One question to put to a model, with its gold answer(s)."""

    id: str
    question: str
    reference: list[str]
    choices: list[str] | None = None
    slice: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HeldoutSet:
    """The definition of a standard held-out set: where it lives and how its rows map to EvalItems."""

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


# ----------------------------------------------------------------------------------------------------
# Definitions


def available_sets() -> list[str]:
    """Names of the standard held-out sets."""
    return sorted(_definitions())


def get_heldout_set(name: str) -> HeldoutSet:
    """The definition of a standard set; InputError for an unknown name."""
    defs = _definitions()
    if name not in defs:
        raise InputError(f"unknown held-out set '{name}' (known: {', '.join(sorted(defs))})")
    return defs[name]


@cache
def _definitions() -> dict[str, HeldoutSet]:
    folder = resources.files("calrl.data") / "heldout_sets"
    defs = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            defn = parse_definition(yaml.safe_load(entry.read_text(encoding="utf-8")), source=entry.name)
            defs[defn.name] = defn
    return defs


_ANSWER_KINDS = {"text", "choice_columns", "choice_list"}


def parse_definition(raw: Any, *, source: str) -> HeldoutSet:
    """Validate one YAML definition (a mapping) and build a HeldoutSet; ConfigError when malformed."""
    if not isinstance(raw, dict):
        raise ConfigError("a held-out set definition must be a mapping", path=source)
    required = ("name", "hub_id", "configs", "split", "question", "answer")
    for key in required:
        if key not in raw:
            raise ConfigError("missing key", path=source, field=key)
    known = {*required, "slices", "id", "csv_columns", "licence"}
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
        licence=raw.get("licence"),
    )


# ----------------------------------------------------------------------------------------------------
# Entry point


def load_eval_items(spec: str, *, split: str | None = None, limit: int | None = None) -> list[EvalItem]:
    """Load the items of SPEC (a local file or folder, a standard set name, or ``NAME:PATH``).

    ``split`` picks a split of a hub set, a ``save_to_disk`` DatasetDict or a folder of split files
    (default: the set's own split). ``limit`` keeps the first N items. Raises InputError on bad input.
    """
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    spec = str(spec).strip()
    if not spec:
        raise InputError("empty dataset spec")
    name, sep, rest = spec.partition(":")
    if sep and name in _definitions():
        if not rest:
            raise InputError(f"'{spec}': give the path of a local copy after '{name}:'")
        items = _load_named(get_heldout_set(name), split=split, local=Path(rest))
    elif Path(spec).exists():
        items = _load_generic(Path(spec), split=split)
    elif spec in _definitions():
        items = _load_named(get_heldout_set(spec), split=split, local=None)
    else:
        raise InputError(f"dataset '{spec}' is neither an existing file or folder nor a known set "
                         f"(known: {', '.join(available_sets())}; or NAME:PATH for a local copy)")
    if not items:
        raise InputError(f"dataset '{spec}' has no items")
    _check_unique_ids(items, spec)
    return items[:limit] if limit is not None else items


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


def _load_named(defn: HeldoutSet, *, split: str | None, local: Path | None) -> list[EvalItem]:
    split = split or defn.split
    groups = _hub_groups(defn, split) if local is None else _local_groups(defn, local, split)
    multi = len(defn.configs) > 1
    items = []
    for group in groups:
        for index, row in enumerate(group.rows):
            if group.config is not None:
                row.setdefault("__config__", group.config)
            if defn.id_field:
                raw_id = _get(row, defn.id_field)
                if raw_id is _MISSING or raw_id in (None, ""):
                    raise InputError(f"row {index}: missing id column", path=group.source, field=defn.id_field)
                item_id = str(raw_id)
            elif multi and group.config is not None:
                item_id = f"{defn.name}-{group.config}-{split}-{index}"
            else:
                item_id = f"{defn.name}-{split}-{index}"
            try:
                items.append(_map_row(defn, row, item_id))
            except _RowError as err:
                raise InputError(f"row {index}: {err.message} (expected the schema of {defn.hub_id})",
                                 path=group.source, field=err.field) from None
    return items


def _hub_groups(defn: HeldoutSet, split: str) -> list[_Group]:
    import datasets

    groups = []
    for config in defn.configs:
        where = defn.hub_id + (f" ({config})" if config else "")
        try:
            ds = datasets.load_dataset(defn.hub_id, config, split=split)
        except Exception as exc:  # noqa: BLE001 - any hub/network/cache failure is reported as one line
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise InputError(
                f"cannot load '{defn.name}' from the Hugging Face hub {where}, split '{split}': {reason}. "
                f"If the hub is unreachable, pass a local copy as '{defn.name}:PATH'"
            ) from None
        groups.append(_Group(config, f"{where}[{split}]", ds.to_list()))
    return groups


def _local_groups(defn: HeldoutSet, path: Path, split: str) -> list[_Group]:
    if not path.exists():
        raise InputError("no such file or folder", path=str(path))
    if path.is_dir() and _is_saved_dataset(path):
        return [_Group(None, str(path), _load_saved(path, split, preferred=defn.split))]
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
    )
    if not files:
        raise InputError(f"no data files ({', '.join(DATA_SUFFIXES)}) in the folder", path=str(path))
    configs = [c for c in defn.configs if c]
    matched = [(f, _config_of(f, configs)) for f in files]
    if path.is_dir():  # a folder of split and/or per-config files: keep the split's, then the configs'
        matched = [(f, c) for f, c in matched if split in f.stem] or matched
        matched = [(f, c) for f, c in matched if c] or matched
    return [_Group(c, str(f), _read_rows(f, csv_columns=defn.csv_columns, question=defn.question))
            for f, c in matched]


def _config_of(file: Path, configs: list[str]) -> str | None:
    hits = [c for c in configs if c in file.stem]
    return max(hits, key=len) if hits else None


# ----------------------------------------------------------------------------------------------------
# Row mapping


class _RowError(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


def _get(row: Any, path: str) -> Any:
    """A dotted path into nested dicts (``answer.aliases``); _MISSING when absent."""
    value = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _require(row: dict[str, Any], path: str) -> Any:
    value = _get(row, path)
    if value is _MISSING or value is None:
        raise _RowError("missing", path)
    return value


def _text(row: dict[str, Any], path: str) -> str:
    value = _require(row, path)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise _RowError(f"expected a string, got {type(value).__name__}", path)
    return str(value).strip()


def _map_row(defn: HeldoutSet, row: dict[str, Any], item_id: str) -> EvalItem:
    question = _text(row, defn.question)
    if not question:
        raise _RowError("empty question", defn.question)
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
        value = _require(row, path)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            text = str(v).strip()
            if marker := spec.get("after"):
                if marker not in text:
                    raise _RowError(f"no '{marker.strip()}' marker before the final answer", path)
                text = text.rsplit(marker, 1)[1].strip()
            values.append(text.replace(",", "") if marker and _is_number(text.replace(",", "")) else text)
    if spec.get("number_words"):
        values += [w for v in values if (w := _number_word(v))]
    reference = [v for v in dict.fromkeys(values) if v]
    if not reference:
        raise _RowError("no reference answer", str(spec["field"]))
    return reference


def _choice_answer(spec: dict[str, Any], row: dict[str, Any], item_id: str) -> tuple[list[str], list[str]]:
    if spec["kind"] == "choice_columns":
        options = [_text(row, c) for c in spec["columns"]]
        correct = int(spec["correct"])
    else:
        raw = _require(row, spec["choices"])
        if not isinstance(raw, (list, tuple)) or len(raw) < 2:
            raise _RowError("expected a list of at least two options", spec["choices"])
        options = [str(o).strip() for o in raw]
        correct = _correct_index(spec, row, len(options))
    if len(options) > len(LETTERS):
        raise _RowError(f"{len(options)} options; at most {len(LETTERS)} are supported")
    if spec.get("shuffle_seed") is not None:
        order = list(range(len(options)))
        random.Random(f"{spec['shuffle_seed']}:{item_id}").shuffle(order)
        options, correct = [options[j] for j in order], order.index(correct)
    return [LETTERS[correct], options[correct]], options


def _correct_index(spec: dict[str, Any], row: dict[str, Any], n: int) -> int:
    if "correct_flags" in spec:
        flags = _require(row, spec["correct_flags"])
        hits = [i for i, f in enumerate(flags) if int(f) == 1]
        if len(flags) != n or len(hits) != 1:
            raise _RowError("expected exactly one correct flag per option", spec["correct_flags"])
        return hits[0]
    if "answer_label" in spec:
        labels = [str(x).strip() for x in _require(row, spec["labels"])]
        key = _text(row, spec["answer_label"])
        if len(labels) != n or key not in labels:
            raise _RowError(f"answer key '{key}' is not one of the labels {labels}", spec["answer_label"])
        return labels.index(key)
    value = _require(row, spec["answer_index"])
    text = str(value).strip()
    if isinstance(value, int) or text.isdigit():
        index = int(text)
    elif len(text) == 1 and text.upper() in LETTERS:
        index = LETTERS.index(text.upper())
    else:
        raise _RowError(f"answer '{text}' is neither an index nor a letter", spec["answer_index"])
    if not 0 <= index < n:
        raise _RowError(f"answer index {index} outside the {n} options", spec["answer_index"])
    return index


def _slices(specs: dict[str, dict[str, Any]], row: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, spec in specs.items():
        if "count_lines" in spec:
            text = str(_require(row, spec["count_lines"]))
            if marker := spec.get("before"):
                text = text.rsplit(marker, 1)[0]
            count = sum(1 for line in text.splitlines() if line.strip())
            cap = spec.get("max")
            out[name] = f"{cap}+" if cap is not None and count >= cap else str(count)
            continue
        paths = spec["field"] if isinstance(spec["field"], list) else [spec["field"]]
        value = next((v for p in paths if (v := _get(row, p)) not in (_MISSING, None, "")), None)
        if value is None:
            if spec.get("optional"):
                continue
            raise _RowError("missing slice value", str(spec["field"]))
        value = str(value).strip()
        if (pattern := spec.get("pattern")) and (m := re.search(pattern, value)):
            value = m.group(1) if m.groups() else m.group(0)
        out[name] = value
    return out


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?", text) is not None


def _number_word(text: str) -> str | None:
    if not text.isdigit() or int(text) >= 100:
        return None
    n = int(text)
    if n < 20:
        return _NUMBER_WORDS[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + (f"-{_NUMBER_WORDS[ones]}" if ones else "")


# ----------------------------------------------------------------------------------------------------
# Generic local files (question / reference / choices / slice / id columns)


def _load_generic(path: Path, *, split: str | None) -> list[EvalItem]:
    lines: list[int] = []  # the file line of each row, for JSONL and CSV
    if path.is_dir():
        if not _is_saved_dataset(path):
            raise InputError("a folder must be a datasets.save_to_disk folder (or use NAME:PATH for a "
                             "standard set)", path=str(path))
        rows = _load_saved(path, split, preferred=None)
    elif path.suffix.lower() in DATA_SUFFIXES:
        rows = _read_rows(path, lines=lines)
    else:
        raise InputError(f"unsupported file type '{path.suffix}' (use {', '.join(DATA_SUFFIXES)})",
                         path=str(path))
    items = []
    for index, row in enumerate(rows):
        try:
            items.append(_generic_item(row, f"{path.stem}-{index}"))
        except _RowError as err:
            line = lines[index] if len(lines) == len(rows) else None
            where = "" if line is not None else f"row {index}: "
            raise InputError(where + err.message, path=str(path), line=line, field=err.field) from None
    return items


def _generic_item(row: dict[str, Any], default_id: str) -> EvalItem:
    raw_id = row.get("id")
    item_id = str(raw_id).strip() if raw_id not in (None, "") else default_id
    question = _text(row, "question")
    if not question:
        raise _RowError("empty question", "question")
    reference = _as_str_list(row.get("reference"), "reference")
    if not reference:
        raise _RowError("missing", "reference")
    choices = _as_str_list(row.get("choices"), "choices") or None
    return EvalItem(item_id, question, reference, choices, _as_slice(row.get("slice")))


def _decode_json_cell(value: Any, opener: str) -> Any:
    if isinstance(value, str) and value.strip().startswith(opener):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _as_str_list(value: Any, name: str) -> list[str]:
    value = _decode_json_cell(value, "[")
    if value is None or value == "":
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [str(value).strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v).strip() for v in value]
    raise _RowError("expected a string or a list of strings", name)


def _as_slice(value: Any) -> dict[str, str]:
    value = _decode_json_cell(value, "{")
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        return {"slice": value}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items() if v is not None}
    raise _RowError("expected a string or an object of strings", "slice")


# ----------------------------------------------------------------------------------------------------
# Readers


def _is_saved_dataset(path: Path) -> bool:
    return any((path / marker).exists() for marker in _SAVE_TO_DISK_MARKERS)


def _load_saved(path: Path, split: str | None, *, preferred: str | None) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - a corrupt folder is a user input problem
        raise InputError(f"not a readable save_to_disk folder: {str(exc).splitlines()[0][:200]}",
                         path=str(path)) from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        pick = split or (preferred if preferred in names else None)
        if pick is None and len(names) == 1:
            pick = names[0]
        if pick not in names:
            raise InputError(f"split '{pick}' not found (splits: {', '.join(names)}); pass --split",
                             path=str(path))
        ds = ds[pick]
    return ds.to_list()


def _read_rows(path: Path, *, csv_columns: tuple[str, ...] | None = None, question: str = "question",
               lines: list[int] | None = None) -> list[dict[str, Any]]:
    """The rows of a data file; ``lines`` (when given) receives each JSONL/CSV row's line number."""
    lines = lines if lines is not None else []
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, lines)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".csv":
        return _read_csv(path, csv_columns=csv_columns, question=question, lines=lines)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"not a readable Parquet file: {str(exc).splitlines()[0][:200]}",
                             path=str(path)) from None
    raise InputError(f"unsupported file type '{path.suffix}'", path=str(path))


def _read_jsonl(path: Path, lines: list[int]) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON ({exc.msg})", path=str(path), line=number) from None
            if not isinstance(row, dict):
                raise InputError("each line must be a JSON object", path=str(path), line=number)
            rows.append(row)
            lines.append(number)
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
    if isinstance(data, dict):  # BIG-Bench task.json keeps its rows under "examples"
        data = data.get("examples", data.get("data"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError("expected a list of objects, or an object with an 'examples' list", path=str(path))
    return data


def _read_csv(path: Path, *, csv_columns: tuple[str, ...] | None, question: str,
              lines: list[int]) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        table = [(reader.line_num, cells) for cells in reader]  # line_num: where the record ends
    if not table:
        return []
    header_less = csv_columns is not None and question not in table[0][1]
    names = list(csv_columns) if header_less else table[0][1]
    rows = []
    for number, cells in table if header_less else table[1:]:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            raise InputError(f"expected {len(names)} columns, got {len(cells)}", path=str(path), line=number)
        rows.append(_nest(dict(zip(names, cells, strict=True))))
        lines.append(number)
    return rows


_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")


def _nest(flat: dict[str, str]) -> dict[str, Any]:
    """Turn columns named ``choices[0]``, ``choices[1]`` ... into one list column ``choices``."""
    row: dict[str, Any] = {}
    lists: dict[str, dict[int, str]] = {}
    for key, value in flat.items():
        if m := _INDEXED.match(key):
            lists.setdefault(m.group(1), {})[int(m.group(2))] = value
        else:
            row[key] = value
    for key, parts in lists.items():
        row[key] = [parts[i] for i in sorted(parts)]
    return row
