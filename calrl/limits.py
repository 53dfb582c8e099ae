"""Bounds on user-chosen sizes of the evaluation commands, so no option can make a run explode, and the
defaults of those sizes shared by the eval, the gate, the training callback and the CLI.

One home for each bound and default; the CLI options, the configs and the library checks all read them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from calrl.errors import InputError

#: Most equal-width bins for ECE, reliability diagrams and histogram binning. With verbalised
#: confidences on a 0-10 or percent scale more than 100 bins are already mostly empty; each bin costs
#: memory per bootstrap replicate, and 10^6 bins took 9.9 GB.
MAX_BINS = 1000
#: Equal-width bins of ECE, reliability diagrams and histogram binning when none are asked for.
DEFAULT_BINS = 15


def check_int(value: object, low: int, high: int, *, field: str) -> int:
    """``value`` if it is an integer (not a bool) in [low, high], else an InputError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"must be an integer from {low} to {high}, got {value!r}", field=field)
    return value


def check_bins(n_bins: object, *, field: str = "bins") -> int:
    """``n_bins`` if it is an integer in [1, MAX_BINS], else an InputError naming ``field``."""
    return check_int(n_bins, 1, MAX_BINS, field=field)


#: Largest seed of any command (bootstrap, sampling, splits, training): what numpy, torch and Python's
#: ``random`` all accept (numpy's legacy seeding, used by ``transformers.set_seed``, stops at 2^32 - 1).
MAX_SEED = 2**32 - 1

#: Most bootstrap resamples (``--bootstrap``). A percentile interval is stable to the third decimal well below
#: this; the smooth-ECE bootstrap holds one row of counts per resample (10^9 resamples asked for 256 GB).
MAX_BOOTSTRAP = 10_000
#: Bootstrap resamples of ``calrl eval``'s smooth-ECE interval, and of the release gate's paired intervals
#: (``calrl compare``), when none are asked for. The training callback's evals default to none (0).
DEFAULT_BOOTSTRAP = 200
DEFAULT_GATE_BOOTSTRAP = 1000

#: Most items counted by a size option (``--limit``, ``--min-slice-size``).
MAX_ITEMS = 10**9
#: Items a slice needs for its numbers to count: smaller slices are flagged small in an eval and never block
#: the gate.
DEFAULT_MIN_SLICE_SIZE = 30

#: Most prompts of one generation batch, tokens of one answer, sampled answers and confidence retries per item.
MAX_BATCH_SIZE = 65_536
MAX_NEW_TOKENS = 1 << 20
MAX_SAMPLES = 1000
MAX_RETRIES = 100
#: Prompts generated together and new tokens of each answer when none are asked for.
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_NEW_TOKENS = 64

#: Most distinct slice values (all slice keys together) of one evaluation. Each value gets its own metrics,
#: report row and gate check (about 3 ms each); slices are groups such as a domain or a difficulty, and a
#: per-item key (200,000 distinct values on 10^6 rows) would otherwise run for many minutes and write a
#: report nobody can read.
MAX_SLICE_VALUES = 1000


def check_seed(seed: object, *, field: str = "seed") -> int:
    """``seed`` if it is an integer in [0, MAX_SEED], else an InputError naming ``field``."""
    return check_int(seed, 0, MAX_SEED, field=field)


def check_bootstrap(n_boot: object, *, field: str = "bootstrap") -> int:
    """``n_boot`` if it is an integer in [0, MAX_BOOTSTRAP], else an InputError naming ``field``."""
    return check_int(n_boot, 0, MAX_BOOTSTRAP, field=field)


def check_item_slices(items: Iterable[Any]) -> None:
    """``check_slice_values`` of items that carry a ``slice`` mapping (held-out items before any generation)."""
    values: dict[str, set[str]] = {}
    for item in items:
        for key, value in (getattr(item, "slice", None) or {}).items():
            values.setdefault(key, set()).add(value)
    check_slice_values({key: len(seen) for key, seen in values.items()})


def check_slice_values(counts: dict[str, int]) -> None:
    """An InputError when the slice keys have more than ``MAX_SLICE_VALUES`` distinct values in all;
    ``counts``: distinct values per key."""
    total = sum(counts.values())
    if total > MAX_SLICE_VALUES:
        key, most = max(counts.items(), key=lambda kv: kv[1])
        raise InputError(f"{total:,} distinct slice values (key {key!r}: {most:,}), more than the "
                         f"{MAX_SLICE_VALUES:,} an evaluation reports; slices are groups (a domain, a difficulty): "
                         "drop or coarsen that key", field="slice")
