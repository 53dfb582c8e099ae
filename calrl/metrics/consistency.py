"""Consistency signals over sampled answers (semantic-entropy style, discrete clusters).

Input layout: ``cluster_ids`` is an integer tensor ``[n_items, n_samples]``; entry ``[i, s]`` is the
cluster of sample ``s`` of item ``i`` (ids are local to the item: only equality within a row matters),
and any negative entry (use -1) is padding for items with fewer samples. Clustering itself (normalised
exact match, numeric equality) is done by the caller. An item with no valid sample gets NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_ids(cluster_ids: Tensor) -> None:
    if cluster_ids.ndim != 2:
        raise ValueError(f"cluster_ids must have shape [n_items, n_samples], got {tuple(cluster_ids.shape)}")
    if cluster_ids.is_floating_point() or cluster_ids.is_complex() or cluster_ids.dtype == torch.bool:
        raise ValueError(f"cluster_ids must be an integer tensor, got {cluster_ids.dtype}")


def cluster_counts(cluster_ids: Tensor) -> tuple[Tensor, Tensor]:
    """``(counts, n_valid)``: ``counts[i, c]`` is the size of the c-th distinct cluster of item i (in
    ascending id order, zero-padded to ``n_samples`` columns); ``n_valid[i]`` is the number of samples.

    Example:
        >>> import torch
        >>> from calrl.metrics import cluster_counts
        >>> ids = torch.tensor([[0, 0, 1, -1], [2, 2, 2, 2]])  # item 0: 3 samples (-1 pads), item 1: 4
        >>> counts, n_valid = cluster_counts(ids)
        >>> counts.tolist(), n_valid.tolist()
        ([[2.0, 1.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]], [3.0, 4.0])
    """
    _check_ids(cluster_ids)
    dtype = torch.get_default_dtype()
    ids, _ = torch.sort(cluster_ids.to(torch.int64), dim=1)
    valid = ids >= 0
    new = valid.clone()
    new[:, 1:] &= ids[:, 1:] != ids[:, :-1]
    run = (torch.cumsum(new, dim=1) - 1).clamp_(min=0)
    counts = torch.zeros(ids.shape, dtype=dtype, device=ids.device).scatter_add_(1, run, valid.to(dtype))
    return counts, valid.sum(1).to(dtype)


def majority_share(cluster_ids: Tensor) -> Tensor:
    """Share of an item's samples in its largest cluster, in [1/n_samples, 1].

    Example:
        >>> import torch
        >>> from calrl.metrics import majority_share
        >>> ids = torch.tensor([[0, 0, 1, -1], [2, 2, 2, 2]])  # 2 of 3 samples agree; 4 of 4
        >>> [round(v, 4) for v in majority_share(ids).tolist()]
        [0.6667, 1.0]
    """
    counts, n_valid = cluster_counts(cluster_ids)
    if counts.shape[1] == 0:
        return torch.full_like(n_valid, float("nan"))
    return counts.amax(1) / n_valid


def agreement_rate(cluster_ids: Tensor, answer_ids: Tensor | None = None) -> Tensor:
    """Share of an item's samples that agree with its answer.

    ``answer_ids`` ([n_items]) is the cluster id of the answer being graded (clustered together with the
    samples); a negative answer id (no answer) gives NaN. Without ``answer_ids`` the answer is taken to be
    the majority cluster, so the result equals :func:`majority_share`.

    Example:
        >>> import torch
        >>> from calrl.metrics import agreement_rate
        >>> ids = torch.tensor([[0, 0, 1, -1], [2, 2, 2, 2]])
        >>> answers = torch.tensor([1, -1])  # item 0 answered cluster 1 (1 of 3 samples); item 1 gave none
        >>> [round(v, 4) for v in agreement_rate(ids, answers).tolist()]
        [0.3333, nan]
    """
    if answer_ids is None:
        return majority_share(cluster_ids)
    _check_ids(cluster_ids)
    if answer_ids.shape != cluster_ids.shape[:1]:
        raise ValueError(f"answer_ids must have shape [{cluster_ids.shape[0]}], got {tuple(answer_ids.shape)}")
    dtype = torch.get_default_dtype()
    valid = cluster_ids >= 0
    agree = (valid & (cluster_ids == answer_ids.unsqueeze(1))).sum(1).to(dtype)
    rate = agree / valid.sum(1).to(dtype)
    return torch.where(answer_ids >= 0, rate, torch.full_like(rate, float("nan")))


def discrete_semantic_entropy(cluster_ids: Tensor, *, base: float | None = None) -> Tensor:
    """Entropy of the empirical distribution of an item's samples over clusters.

    H = -sum_c p_c log p_c with p_c = (samples in cluster c) / (samples); natural log (nats) unless
    ``base`` is given (``base=2`` for bits). 0 when all samples agree; log(k) for k equal clusters.

    Example:
        >>> import torch
        >>> from calrl.metrics import discrete_semantic_entropy
        >>> ids = torch.tensor([[0, 0, 1, 1], [3, 3, 3, 3], [0, 1, 2, 3]])  # 2 equal clusters, 1, 4
        >>> [round(v, 4) for v in discrete_semantic_entropy(ids, base=2).tolist()]
        [1.0, 0.0, 2.0]
    """
    counts, n_valid = cluster_counts(cluster_ids)
    share = counts / n_valid.unsqueeze(1)
    entropy = 0.0 - torch.xlogy(share, share).sum(1)  # 0.0 - x: no -0.0
    if counts.shape[1] == 0:
        entropy = torch.full_like(n_valid, float("nan"))
    return entropy / math.log(base) if base is not None else entropy
