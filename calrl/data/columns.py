"""Predictions held by column: a large predictions file's records (:class:`PredictionColumns`) and its items
resolved a group at a time (:class:`GroupedResolved`), without an object per item.

``calrl eval --predictions`` on 10^6 rows spent about a second building a :class:`PredictionRecord` and a
:class:`ResolvedRecord` per row; held by column, an item's record is built only where one is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Any, overload

from calrl.data.records import PREDICTION_FIELDS, PredictionRecord, ResolvedRecord


class PredictionColumns:
    """Prediction records as one list per field of :class:`PredictionRecord` (:data:`PREDICTION_FIELDS`, in its
    order): ``columns[name][i]`` is record ``i``'s value. The values are shared with the records built from
    them (:meth:`record`, :meth:`records`), not copied."""

    def __init__(self, columns: Mapping[str, list[Any]] | None = None) -> None:
        if columns is None:
            columns = {name: [] for name in PREDICTION_FIELDS}
        if list(columns) != list(PREDICTION_FIELDS):
            raise ValueError(f"columns {list(columns)}, expected {list(PREDICTION_FIELDS)}")
        if len({len(column) for column in columns.values()}) > 1:
            raise ValueError("columns of different lengths")
        self.columns = dict(columns)

    @classmethod
    def of(cls, records: Sequence[PredictionRecord]) -> PredictionColumns:
        return cls({name: list(map(attrgetter(name), records)) for name in PREDICTION_FIELDS})

    def __len__(self) -> int:
        return len(self.columns["id"])

    def __getitem__(self, name: str) -> list[Any]:
        """The column of field ``name``."""
        return self.columns[name]

    def extend(self, other: PredictionColumns) -> None:
        for name, column in self.columns.items():
            column.extend(other.columns[name])

    def record(self, i: int) -> PredictionRecord:
        return PredictionRecord(*(column[i] for column in self.columns.values()))

    def records(self) -> list[PredictionRecord]:
        return list(map(PredictionRecord, *self.columns.values()))


class GroupedResolved(Sequence[ResolvedRecord]):
    """Items resolved a group at a time, as a read-only sequence of :class:`ResolvedRecord`: item ``i`` is the
    group's first item ``firsts[groups[i]]`` with the id ``ids[i]`` (the items of a group are equal in every
    other field). Records are built when read; ``firsts`` maps each group to the resolved first item."""

    def __init__(self, ids: Sequence[str], groups: Sequence[int], firsts: Mapping[int, ResolvedRecord]) -> None:
        if len(ids) != len(groups):
            raise ValueError(f"{len(ids)} ids and {len(groups)} groups")
        self.ids, self.groups, self.firsts = ids, groups, firsts

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> ResolvedRecord: ...

    @overload
    def __getitem__(self, i: slice) -> list[ResolvedRecord]: ...

    def __getitem__(self, i: int | slice) -> ResolvedRecord | list[ResolvedRecord]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return _with_id(self.firsts[self.groups[i]], self.ids[i])

    def __iter__(self) -> Iterator[ResolvedRecord]:
        firsts = self.firsts
        for rid, group in zip(self.ids, self.groups, strict=True):
            yield _with_id(firsts[group], rid)


def _with_id(r: ResolvedRecord, rid: str) -> ResolvedRecord:
    return ResolvedRecord(rid, r.abstained, r.correct, r.confidence, r.confidence_source, r.hedged, r.slice,
                          r.samples, r.answer, r.response, r.reference)
