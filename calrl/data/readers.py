"""Reading rows from local data files, and the generic item format of a local evaluation file.

Data files: JSONL, JSON (a list of objects, or BIG-Bench's ``{"examples": [...]}``), CSV (with a header,
or header-less with given column names; columns ``name[0]``, ``name[1]`` ... form one list column),
Parquet, and ``datasets.save_to_disk`` folders. A generic evaluation file has the columns ``question``,
``reference`` (string or list), optional ``choices`` (list), ``slice`` (string or object) and ``id``.
Every problem is an InputError naming the file, the line (JSONL, CSV) or row, and the field.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from calrl.data.items import EvalItem
from calrl.errors import InputError
from calrl.io import check_input, iter_lines, read_text
from calrl.jsonio import loads_json

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
MISSING = object()


# ----------------------------------------------------------------------------------------------------
# Row access


class RowError(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


def field_value(row: Any, path: str) -> Any:
    """A dotted path into nested dicts (``answer.aliases``); MISSING when absent."""
    value = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def require(row: dict[str, Any], path: str) -> Any:
    value = field_value(row, path)
    if value is MISSING or value is None:
        raise RowError("missing", path)
    return value


def cell_text(row: dict[str, Any], path: str) -> str:
    value = require(row, path)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise RowError(f"expected a string, got {type(value).__name__}", path)
    return str(value).strip()


# ----------------------------------------------------------------------------------------------------
# Generic local files (question / reference / choices / slice / id columns)


def load_generic(path: Path, *, split: str | None) -> list[EvalItem]:
    lines: list[int] = []  # the file line of each row, for JSONL and CSV
    check_input(path, option="dataset", allow_dir=True)  # a FIFO would block, a device never end
    if path.is_dir():
        if not is_saved_dataset(path):
            raise InputError("a folder must be a datasets.save_to_disk folder (or use NAME:PATH for a "
                             "standard set)", path=str(path))
        rows = load_saved(path, split, preferred=None)
    elif path.suffix.lower() in DATA_SUFFIXES:
        rows = read_rows(path, lines=lines)
    else:
        raise InputError(f"unsupported file type '{path.suffix}' (use {', '.join(DATA_SUFFIXES)})",
                         path=str(path))
    items = []
    for index, row in enumerate(rows):
        try:
            items.append(_generic_item(row, f"{path.stem}-{index}"))
        except RowError as err:
            line = lines[index] if len(lines) == len(rows) else None
            where = "" if line is not None else f"row {index}: "
            raise InputError(where + err.message, path=str(path), line=line, field=err.field) from None
    return items


def _generic_item(row: dict[str, Any], default_id: str) -> EvalItem:
    raw_id = row.get("id")
    item_id = str(raw_id).strip() if raw_id not in (None, "") else default_id
    question = cell_text(row, "question")
    if not question:
        raise RowError("empty question", "question")
    reference = _as_str_list(row.get("reference"), "reference")
    if not reference:
        raise RowError("missing", "reference")
    choices = _as_str_list(row.get("choices"), "choices") or None
    return EvalItem(item_id, question, reference, choices, _as_slice(row.get("slice")))


def _decode_json_cell(value: Any, opener: str, name: str) -> Any:
    """A cell holding JSON text (``opener``: a list or an object) decoded; text that only starts like JSON
    stays text, JSON that cannot be used (too deep, a lone surrogate...) is a RowError naming ``name``."""
    if isinstance(value, str) and value.strip().startswith(opener):
        try:
            return loads_json(value, path="", field=name)
        except InputError as err:
            if err.reason.startswith("malformed"):
                return value
            raise RowError(err.reason, err.field) from None
    return value


def _as_str_list(value: Any, name: str) -> list[str]:
    value = _decode_json_cell(value, "[", name)
    if value is None or value == "":
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [str(value).strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v).strip() for v in value]
    raise RowError("expected a string or a list of strings", name)


def _as_slice(value: Any) -> dict[str, str]:
    value = _decode_json_cell(value, "{", "slice")
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        return {"slice": value}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items() if v is not None}
    raise RowError("expected a string or an object of strings", "slice")


# ----------------------------------------------------------------------------------------------------
# Readers


def is_saved_dataset(path: Path) -> bool:
    return any((path / marker).exists() for marker in _SAVE_TO_DISK_MARKERS)


def open_saved(path: Path) -> Any:
    """``datasets.load_from_disk(path)`` (a Dataset or a DatasetDict), every failure one InputError.

    The folder's JSON files are checked first (``datasets`` fails on a ``state.json`` of ``{}`` or ``[]``
    with a KeyError or a TypeError, and on a dataset saved with no rows with an IndexError), then
    anything ``load_from_disk`` raises on a damaged folder is reported with its first line.
    """
    import datasets  # 0.8 s: calrl.data.readers is on calrl --help's path (tests/test_cli_startup.py)

    splits = [path]
    if (path / "dataset_dict.json").is_file():
        names = _saved_json(path / "dataset_dict.json", "splits", list)
        if not all(isinstance(n, str) and n and "/" not in n for n in names):
            raise InputError("field 'splits': expected a list of split names", path=str(path / "dataset_dict.json"))
        splits = [path / n for n in names]
    for folder in splits:
        if (folder / "dataset_info.json").is_file():
            _saved_json(folder / "dataset_info.json", None, dict)
        if (folder / "state.json").is_file() and not _saved_json(folder / "state.json", "_data_files", list):
            raise InputError("holds no rows (state.json lists no data files: an empty dataset was saved)",
                             path=str(folder))
    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged folder is a user input problem, whatever datasets raises
        raise InputError(f"not a readable saved datasets folder: {_first_line(exc)}", path=str(path)) from None


def check_arrow_table(table: Any, path: Path) -> Any:
    """``table`` (a pyarrow Table read from ``path``) once its data is checked: a string column holding bytes
    that are not UTF-8 (Arrow does not check them when reading) is an InputError naming the column."""
    import pyarrow as pa  # 0.1 s: on calrl --help's path; only Arrow inputs need it

    try:
        table.validate(full=True)
    except pa.ArrowInvalid as exc:
        found = re.match(r"Column (\d+): (?:In chunk \d+: )?(?:Invalid: )?(.*)", str(exc))
        if found is None or int(found.group(1)) >= table.num_columns:
            raise InputError(f"damaged Arrow data: {_first_line(exc)}", path=str(path)) from None
        raise InputError(f"invalid column data: {found.group(2)}", path=str(path),
                         field=table.column_names[int(found.group(1))]) from None
    return table


def _saved_json(file: Path, key: str | None, kind: type) -> Any:
    """The value under ``key`` (the whole document when None) of a JSON file of a saved folder, of type ``kind``."""
    doc = loads_json(read_text(file), path=str(file))
    value = doc.get(key) if key is not None and isinstance(doc, dict) else doc
    if not isinstance(doc, dict) or not isinstance(value, kind):
        what = f"an object with a list '{key}'" if key else "a JSON object"
        raise InputError(f"not written by datasets' save_to_disk: expected {what}", path=str(file))
    return value


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_saved(path: Path, split: str | None, *, preferred: str | None) -> list[dict[str, Any]]:
    import datasets  # 0.8 s: calrl.data.readers is on calrl --help's path (tests/test_cli_startup.py)

    ds = open_saved(path)
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        pick = split or (preferred if preferred in names else None)
        if pick is None and len(names) == 1:
            pick = names[0]
        if pick not in names:
            raise InputError(f"split '{pick}' not found (splits: {', '.join(names)}); pass --split",
                             path=str(path))
        ds = ds[pick]
    check_arrow_table(ds.data.table, path)
    return ds.to_list()


def read_rows(path: Path, *, csv_columns: tuple[str, ...] | None = None, question: str = "question",
               lines: list[int] | None = None) -> list[dict[str, Any]]:
    """The rows of a data file; ``lines`` (when given) receives each JSONL/CSV row's line number."""
    check_input(path, option="data file")
    lines = lines if lines is not None else []
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, lines)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".csv":
        return _read_csv(path, csv_columns=csv_columns, question=question, lines=lines)
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # 0.2 s: on calrl --help's path; only Parquet needs it

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"not a readable Parquet file: {_first_line(exc)}", path=str(path)) from None
        return check_arrow_table(table, path).to_pylist()
    raise InputError(f"unsupported file type '{path.suffix}'", path=str(path))


def _read_jsonl(path: Path, lines: list[int]) -> list[dict[str, Any]]:
    rows = []
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        row = loads_json(line, path=str(path), line=number)
        if not isinstance(row, dict):
            raise InputError("each line must be a JSON object", path=str(path), line=number)
        rows.append(row)
        lines.append(number)
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    data = loads_json(read_text(path), path=str(path))
    if isinstance(data, dict):  # BIG-Bench task.json keeps its rows under "examples"
        data = data.get("examples", data.get("data"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError("expected a list of objects, or an object with an 'examples' list", path=str(path))
    return data


def csv_error(exc: Exception, path: Path, line_num: int) -> InputError:
    """The one-line error of a ``csv.Error`` raised after ``line_num`` lines (``csv``'s own count)."""
    if "unexpected end of data" in str(exc):  # a quoted cell not closed: its record starts on the next line
        return InputError("malformed CSV: a quoted cell is not closed before the end of the file", path=str(path),
                          line=line_num + 1)
    return InputError(f"malformed CSV: {exc}", path=str(path), line=line_num)


def _read_csv(path: Path, *, csv_columns: tuple[str, ...] | None, question: str,
              lines: list[int]) -> list[dict[str, Any]]:
    reader = csv.reader(read_text(path).splitlines(keepends=True), strict=True)  # strict: a cut file fails
    try:
        table = [(reader.line_num, cells) for cells in reader]  # line_num: where the record ends
    except csv.Error as exc:
        raise csv_error(exc, path, reader.line_num) from None
    if not table:
        return []
    header_less = csv_columns is not None and question not in table[0][1]
    names = list(csv_columns) if header_less else table[0][1]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError("duplicate column (the header names it twice)", path=str(path), line=1, field=twice)
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
