"""A stratified, seeded, shuffled subset of evaluation items (``calrl eval --limit N --sample-seed S``).

The first N items of a set are often one slice (the first MMLU subject, the shortest GSM8K solutions).
:func:`stratified_sample` keeps every slice value in proportion instead: the items are grouped by their
whole ``slice`` mapping and N is shared in proportion to the groups' sizes (largest remainders, ties by
group order); when N is at least the number of groups, a group left with none takes one from the group
holding the most.
Items are drawn within each group and then shuffled with ``random.Random(seed)``, so the same seed gives
the same subset in the same order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from calrl.data.items import EvalItem


def stratified_sample(items: Sequence[EvalItem], n: int, *, seed: int) -> list[EvalItem]:
    """``n`` items of ``items`` stratified by slice, in a shuffled order fixed by ``seed``."""
    if n < 1:
        raise ValueError(f"sample size must be at least 1, got {n}")
    rng = random.Random(seed)
    groups: dict[tuple[tuple[str, str], ...], list[EvalItem]] = {}
    for item in items:
        groups.setdefault(tuple(sorted(item.slice.items())), []).append(item)
    keys = sorted(groups)
    quota = dict.fromkeys(keys, 0)
    _share(quota, {k: len(groups[k]) for k in keys}, min(n, len(items)))
    if n >= len(keys):
        for k in keys:
            if quota[k] == 0:
                donor = max(keys, key=lambda d: (quota[d], -keys.index(d)))
                quota[donor] -= 1
                quota[k] = 1
    picked = [item for k in keys for item in rng.sample(groups[k], quota[k])]
    rng.shuffle(picked)
    return picked


def _share(quota: dict, sizes: dict, extra: int) -> None:
    """Add ``extra`` to ``quota`` in proportion to each group's room left (largest remainder method)."""
    room = {k: sizes[k] - quota[k] for k in quota}
    total = sum(room.values())
    if extra <= 0 or total == 0:
        return
    exact = {k: extra * room[k] / total for k in quota}
    for k in quota:
        quota[k] += math.floor(exact[k])
    left = extra - sum(math.floor(v) for v in exact.values())
    by_remainder = sorted(quota, key=lambda k: (-(exact[k] - math.floor(exact[k])), k))
    for k in by_remainder:
        if left == 0:
            break
        if quota[k] < sizes[k]:
            quota[k] += 1
            left -= 1
