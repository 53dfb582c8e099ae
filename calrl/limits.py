"""Bounds on user-chosen sizes of the evaluation commands, so no option can make a run explode.

One home for each bound; the CLI options and the library checks both read them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from calrl.errors import InputError

#: Most equal-width bins for ECE, reliability diagrams and histogram binning. With verbalised
#: confidences on a 0-10 or percent scale more than 100 bins are already mostly empty; each bin costs
#: memory per bootstrap replicate, and 10^6 bins took 9.9 GB.
MAX_BINS = 1000


def check_bins(n_bins: object, *, field: str = "bins") -> int:
    """``n_bins`` if it is an integer in [1, MAX_BINS], else an InputError naming ``field``."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 1 <= n_bins <= MAX_BINS:
        raise InputError(f"must be an integer from 1 to {MAX_BINS}, got {n_bins!r}", field=field)
    return n_bins

#: Largest seed of any command (bootstrap, sampling, splits, training): what numpy, torch and Python's
#: ``random`` all accept (numpy's legacy seeding, used by ``transformers.set_seed``, stops at 2^32 - 1).
MAX_SEED = 2**32 - 1

#: Most bootstrap resamples (``--bootstrap``). A percentile interval is stable to the third decimal well below
#: this; the smooth-ECE bootstrap holds one row of counts per resample (10^9 resamples asked for 256 GB).
MAX_BOOTSTRAP = 10_000

#: Most items counted by a size option (``--limit``, ``--min-slice-size``).
MAX_ITEMS = 10**9

#: Most prompts of one generation batch, tokens of one answer, sampled answers and confidence retries per item.
MAX_BATCH_SIZE = 65_536
MAX_NEW_TOKENS = 1 << 20
MAX_SAMPLES = 1000
MAX_RETRIES = 100

#: Most distinct slice values (all slice keys together) of one evaluation. Each value gets its own metrics,
#: report row and gate check (about 3 ms each); slices are groups such as a domain or a difficulty, and a
#: per-item key (200,000 distinct values on 10^6 rows) would otherwise run for many minutes and write a
#: report nobody can read.
MAX_SLICE_VALUES = 1000


def check_seed(seed: object, *, field: str = "seed") -> int:
    """``seed`` if it is an integer in [0, MAX_SEED], else an InputError naming ``field``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"must be an integer from 0 to {MAX_SEED}, got {seed!r}", field=field)
    return seed


def check_bootstrap(n_boot: object, *, field: str = "bootstrap") -> int:
    """``n_boot`` if it is an integer in [0, MAX_BOOTSTRAP], else an InputError naming ``field``."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not 0 <= n_boot <= MAX_BOOTSTRAP:
        raise InputError(f"must be an integer from 0 to {MAX_BOOTSTRAP}, got {n_boot!r}", field=field)
    return n_boot


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
