"""Bounds on user-chosen sizes of the evaluation commands, so no option can make a run explode.

One home for each bound; the CLI options and the library checks both read them.
"""

from __future__ import annotations

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
