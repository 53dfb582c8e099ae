"""paired_difference_interval: Tango's score interval for a paired difference of accuracies."""

from __future__ import annotations

import math
import random

import pytest
import torch

from calrl.metrics import paired_difference_interval

Z = 1.959963984540054


def _pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return torch.tensor(a), torch.tensor(b)


def test_published_example():
    # Bentur et al. (2009), airway hyper-responsiveness before/after transplantation, counts (1, 1, 7, 12): Tango's
    # interval -0.517 to -0.026 (Fagerland, Lydersen and Laake, Stat. Med. 2014, and their book's Chapter 8)
    out = paired_difference_interval(*_pairs(1, 1, 7, 12))
    assert out["difference"].item() == pytest.approx(-6 / 21)
    assert out["low"].item() == pytest.approx(-0.517, abs=5e-4)
    assert out["high"].item() == pytest.approx(-0.026, abs=5e-4)
    assert (out["n"].item(), out["a_only"].item(), out["b_only"].item()) == (21, 1, 7)


@pytest.mark.parametrize("n", [120, 600])
def test_no_discordant_items_keeps_the_width(n):
    # the closed form at 0 discordant of n: +/- z^2 / (n + z^2), not the zero width a bootstrap would give
    a = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.5
    out = paired_difference_interval(a, a.clone())
    half = Z * Z / (n + Z * Z)
    assert out["difference"].item() == 0.0
    assert out["low"].item() == pytest.approx(-half, rel=1e-9)
    assert out["high"].item() == pytest.approx(half, rel=1e-9)


def test_the_bounds_solve_the_score_equation():
    # at each bound Tango's statistic equals -/+ z (computed here independently, in plain floats)
    both, a_only, b_only, neither = 50, 9, 3, 38
    n = both + a_only + b_only + neither
    out = paired_difference_interval(*_pairs(both, a_only, b_only, neither))

    def statistic(d: float) -> float:
        aa, bb, cc = 2 * n, -a_only - b_only + (2 * n - a_only + b_only) * d, -b_only * d * (1 - d)
        q = (math.sqrt(bb * bb - 4 * aa * cc) - bb) / (2 * aa)
        return (a_only - b_only - n * d) / math.sqrt(n * (2 * q + d * (1 - d)))

    assert statistic(out["low"].item()) == pytest.approx(Z, abs=1e-9)
    assert statistic(out["high"].item()) == pytest.approx(-Z, abs=1e-9)
    assert out["low"].item() < 6 / 100 < out["high"].item()


def test_swapping_the_sides_mirrors_the_interval_and_rows_are_independent():
    a, b = _pairs(30, 5, 2, 13)
    ab, ba = paired_difference_interval(a, b), paired_difference_interval(b, a)
    assert ab["low"].item() == pytest.approx(-ba["high"].item(), abs=1e-12)
    assert ab["high"].item() == pytest.approx(-ba["low"].item(), abs=1e-12)
    rows = paired_difference_interval(torch.stack([a, b]), torch.stack([b, a]))
    assert rows["low"].tolist() == pytest.approx([ab["low"].item(), ba["low"].item()], abs=1e-12)


def test_coverage_is_near_nominal():
    # 400 simulated studies of 200 pairs with a true difference of 0.05: the 95% interval covers it in 92-98%
    rng = random.Random(0)
    covered = 0
    for _ in range(400):
        cells = rng.choices(range(4), weights=[0.55, 0.10, 0.05, 0.30], k=200)  # both, a only, b only, neither
        a = torch.tensor([c in (0, 1) for c in cells])
        b = torch.tensor([c in (0, 2) for c in cells])
        out = paired_difference_interval(a, b)
        covered += out["low"].item() <= 0.05 <= out["high"].item()
    assert 0.92 <= covered / 400 <= 0.98


def test_empty_and_bad_input():
    out = paired_difference_interval(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))
    assert all(math.isnan(out[k].item()) for k in ("difference", "low", "high"))
    with pytest.raises(ValueError, match="differ in shape"):
        paired_difference_interval(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="alpha"):
        paired_difference_interval(torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool), alpha=1.5)
