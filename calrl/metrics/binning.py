"""Input checks, edge-safe binning, sortable keys and tie groups shared by the metrics.

Conventions used by every function in :mod:`calrl.metrics`:

* ``confidence`` is a floating tensor of stated P(correct) in [0, 1]; ``correct`` is bool or 0/1 of the
  same shape. The last dimension indexes items; leading dimensions (if any) are independent rows, which
  is how the bootstrap evaluates many resamples in one call.
* Sums are accumulated in float64 (float32 on devices without float64, e.g. MPS) and the result is
  returned in the dtype of ``confidence``.
* Every tensor a function creates is created on the device of its inputs. No Python loop runs over
  items; the host reads a scalar only for argument validation (one check, ``validate_args=False``
  skips it), for the number of tie groups (sort-based metrics) and for the grid size of smooth ECE.
* Empty input (no items) gives NaN; bad arguments raise ``ValueError``.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from calrl.limits import DEFAULT_BINS

#: Bin edges are lowered by half a micro-unit (5e-7), so that a stated value that equals a bin edge
#: written as a decimal (0.3, 0.6, 0.7 ...), or a float32/float64 approximation of it, always lands in
#: the bin whose left edge it equals, whatever the number of bins (k/10, k/15, k/20 ...).
EDGE_TOLERANCE = 5e-7


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device supports it, else float32."""
    return torch.float32 if device.type == "mps" else torch.float64


def check_pair(confidence: Tensor, correct: Tensor, *, validate_args: bool = True,
               name: str = "confidence") -> tuple[Tensor, Tensor]:
    """Check shapes/dtypes (and optionally the [0, 1] range) and return ``(confidence, correct)``
    converted to the accumulation dtype. Raises ``ValueError`` on bad arguments, ``TypeError`` for
    non-tensors."""
    if not isinstance(confidence, Tensor) or not isinstance(correct, Tensor):
        raise TypeError(f"{name} and correct must be tensors")
    if confidence.shape != correct.shape:
        raise ValueError(f"{name} and correct must have the same shape, got {tuple(confidence.shape)} "
                         f"and {tuple(correct.shape)}")
    if confidence.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (items)")
    if not confidence.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {confidence.dtype}")
    if correct.device != confidence.device:
        raise ValueError(f"{name} and correct are on different devices: {confidence.device}, {correct.device}")
    if validate_args and confidence.numel() > 0:
        low, high = torch.aminmax(confidence)  # NaN propagates, and fails both comparisons below
        bad = ~((low >= 0) & (high <= 1))
        if correct.dtype != torch.bool:
            bad |= ((correct != 0) & (correct != 1)).any()
        if bool(bad):  # host sync
            raise ValueError(f"{name} must lie in [0, 1] (no NaN) and correct must be 0/1 or bool")
    acc = accumulation_dtype(confidence.device)
    return confidence.to(acc), correct.to(acc)


def bin_index(confidence: Tensor, n_bins: int) -> Tensor:
    """Equal-width bin of each confidence (int64): ``floor((conf + 5e-7) * n_bins)`` in float64,
    clamped to ``[0, n_bins - 1]``.

    Bins are left-closed ``[k/n_bins, (k+1)/n_bins)`` and 1.0 goes to the top bin. A value less than
    5e-7 below an edge counts as lying on it (float noise: float32 0.7 is 0.69999999), so decimals on an
    edge never flip to the bin below, for any ``n_bins``. Stated confidences are multiples of 0.001 or
    coarser, far from this tolerance; the result is ambiguous only for values within ~1e-16 of
    ``k/n_bins - 5e-7``.

    Example:
        >>> import torch
        >>> from calrl.metrics import bin_index
        >>> # float32 0.3 is 0.29999998 but lands in bin [0.3, 0.4); 1.0 goes to the top bin
        >>> bin_index(torch.tensor([0.0, 0.3, 0.65, 1.0]), n_bins=10)
        tensor([0, 3, 6, 9])
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    shifted = confidence.to(accumulation_dtype(confidence.device)) + EDGE_TOLERANCE
    return shifted.mul_(n_bins).floor_().clamp_(0, n_bins - 1).to(torch.int64)


def bin_sums(confidence: Tensor, correct: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin ``(count, sum of confidence, sum of correct)``, each of shape ``[..., n_bins]``.

    Inputs are already checked and in the accumulation dtype; rows (leading dims) are binned
    independently with one ``bincount`` each for all rows together."""
    lead = confidence.shape[:-1]
    rows = math.prod(lead)
    flat = bin_index(confidence, n_bins).reshape(rows, -1)
    flat = flat + torch.arange(rows, device=flat.device).unsqueeze(1) * n_bins
    flat = flat.reshape(-1)
    size = rows * n_bins
    count = torch.bincount(flat, minlength=size).to(confidence.dtype)
    conf_sum = torch.bincount(flat, weights=confidence.reshape(-1), minlength=size)
    corr_sum = torch.bincount(flat, weights=correct.reshape(-1), minlength=size)
    shape = (*lead, n_bins)
    return count.reshape(shape), conf_sum.reshape(shape), corr_sum.reshape(shape)


def reliability_bins(confidence: Tensor, correct: Tensor, n_bins: int = DEFAULT_BINS, *,
                     validate_args: bool = True) -> dict[str, Tensor]:
    """Equal-width reliability bins (methods.md section 6 convention).

    Returns a dict of tensors of shape ``[..., n_bins]``: ``lower``, ``upper`` (bin edges),
    ``count`` (int64), ``mean_confidence`` and ``accuracy``. For an empty bin ``count`` is 0 and
    ``mean_confidence``/``accuracy`` are NaN (undefined, not 0): plots skip NaN points, and a JSON
    writer must map NaN to null.

    Example:
        >>> import torch
        >>> from calrl.metrics import reliability_bins
        >>> conf = torch.tensor([0.125, 0.375, 0.75, 1.0])
        >>> right = torch.tensor([False, True, True, True])
        >>> bins = reliability_bins(conf, right, n_bins=2)
        >>> # bin [0, 0.5): 0.125 and 0.375, mean 0.25, one of two right; [0.5, 1]: 0.75 and 1.0, both right
        >>> bins["count"].tolist(), bins["mean_confidence"].tolist(), bins["accuracy"].tolist()
        ([2, 2], [0.25, 0.875], [0.5, 1.0])
    """
    out_dtype = confidence.dtype if confidence.is_floating_point() else torch.float32
    conf, corr = check_pair(confidence, correct, validate_args=validate_args)
    count, conf_sum, corr_sum = bin_sums(conf, corr, n_bins)
    edges = torch.arange(n_bins + 1, device=conf.device, dtype=conf.dtype) / n_bins
    shape = count.shape
    return {
        "lower": edges[:-1].to(out_dtype).expand(shape).clone(),
        "upper": edges[1:].to(out_dtype).expand(shape).clone(),
        "count": count.to(torch.int64),
        "mean_confidence": (conf_sum / count).to(out_dtype),
        "accuracy": (corr_sum / count).to(out_dtype),
    }


def sortable_key(values: Tensor) -> Tensor:
    """Integer tensor whose order equals the float order of ``values`` (-0.0 and 0.0 map to the same key).

    Sorting integers is several times faster than sorting floats on CPU (radix sort), which is what
    makes AUROC/AURC/equal-mass ECE cheap on 10^6 items. NaN has no meaningful position.
    """
    int_dtype = {torch.float64: torch.int64, torch.float32: torch.int32,
                 torch.float16: torch.int16, torch.bfloat16: torch.int16}[values.dtype]
    bits = (values + 0.0).contiguous().view(int_dtype)  # + 0.0 turns -0.0 into 0.0
    width = torch.iinfo(int_dtype).bits
    return bits ^ ((bits >> (width - 1)) & torch.iinfo(int_dtype).max)


class TieGroups:
    """Items sorted along the last dim and grouped by equal value, flattened over rows.

    Attributes: ``order`` ([rows * n] permutation of the flattened items: row by row, each row sorted),
    ``new`` ([rows * n] bool, True where a sorted item starts a group),
    ``group`` ([rows * n] group id of each sorted item, global over rows), ``group_row`` ([n_groups]
    row of each group), ``rows``, ``n``. Only 1-D integer sorts are used (the fast radix path on CPU).
    """

    def __init__(self, values: Tensor, *, descending: bool = False) -> None:
        self.n = values.shape[-1]
        self.rows = math.prod(values.shape[:-1])
        key = sortable_key(values.reshape(-1))
        if descending:
            key = ~key  # bitwise not reverses the order without overflow
        _, order = torch.sort(key)
        if self.rows > 1:  # then order by row, keeping the value order inside each row
            row_sorted = torch.div(order, self.n, rounding_mode="floor")
            _, by_row = torch.sort(row_sorted, stable=True)
            order = torch.gather(order, 0, by_row)
        self.order = order
        sorted_key = torch.gather(key, 0, order)
        new = torch.ones_like(sorted_key, dtype=torch.bool)
        new[1:] = sorted_key[1:] != sorted_key[:-1]
        if self.rows > 1:
            new[:: self.n] = True  # a group never spans two rows
        self.new = new

    @functools.cached_property
    def group(self) -> Tensor:
        """Group id of each sorted item (global over rows)."""
        return torch.cumsum(self.new, 0) - 1

    @functools.cached_property
    def group_row(self) -> Tensor:
        """Row of each group."""
        if self.rows > 1:
            return torch.div(self.order[self.new], self.n, rounding_mode="floor")
        n_groups = int(self.group[-1]) + 1 if self.group.numel() else 0
        return torch.zeros(n_groups, dtype=torch.int64, device=self.new.device)

    def gather(self, x: Tensor) -> Tensor:
        """``x`` ([..., n], same layout as the grouped values) in sorted order, flattened."""
        return torch.gather(x.reshape(-1), 0, self.order)

    def group_start_in_row(self) -> Tensor:
        """For each sorted item, the position (within its row) of the first item of its group."""
        position = torch.arange(self.new.numel(), device=self.new.device)
        start = torch.cummax(torch.where(self.new, position, torch.zeros_like(position)), 0).values
        return start % self.n if self.rows > 1 else start

    def group_size(self, dtype: torch.dtype) -> Tensor:
        """Number of items in each group."""
        return torch.bincount(self.group, minlength=self.group_row.numel()).to(dtype)

    def group_sum(self, x_sorted_flat: Tensor) -> Tensor:
        """Sum of a sorted, flattened per-item quantity within each group."""
        return torch.bincount(self.group, weights=x_sorted_flat, minlength=self.group_row.numel())

    def row_sum(self, per_group: Tensor) -> Tensor:
        """Sum of a per-group quantity within each row, shape ``[rows]``."""
        return torch.bincount(self.group_row, weights=per_group, minlength=self.rows)

    def cumsum_within_rows(self, per_group: Tensor) -> Tensor:
        """Inclusive cumulative sum of a per-group quantity, restarting at each row."""
        total = torch.cumsum(per_group, 0)
        if self.rows == 1:
            return total
        row_total = self.row_sum(per_group)
        row_offset = torch.cumsum(row_total, 0) - row_total
        return total - row_offset[self.group_row]
