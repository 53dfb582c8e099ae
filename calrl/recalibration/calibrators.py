"""Post-hoc recalibration of stated confidence: temperature, Platt, isotonic, histogram binning.

Fitted on a calibration split (confidence in [0, 1], correct in {0, 1}) by negative log-likelihood
or empirical frequencies (methods.md sec 6). A calibrator maps confidences to confidences; it never
touches answers. Temperature and Platt (slope constrained to be >= 0) and isotonic are monotone, so
the ranking of items by confidence is kept (ties may be created, never reversed); histogram binning
is piecewise constant and need not be monotone; it bins with the metrics layer's rule
(:func:`calrl.metrics.bin_index`), so a confidence falls in the same bin as in ECE. All outputs lie in
[0, 1]. Pure torch, any device; fitting is done in float64.

Temperature and Platt scaling need both correct and wrong items (on one class the likelihood has no
finite optimum); a temperature that ends on a bound of its search range is reported in ``warnings``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from calrl.errors import InputError
from calrl.limits import DEFAULT_BINS, check_bins
from calrl.metrics import bin_index
from calrl.recalibration.methods import METHODS

# Probabilities are clipped to [EPS, 1 - EPS] before logit and in the NLL. Verbalized confidences
# hit 0 and 1 ("Confidence: 10"); with a 1e-6 clip one wrong "10" costs 13.8 nats and dominates a
# temperature fit, with 1e-3 it costs 6.9, i.e. a stated 1.0 is read as 0.999.
EPS = 1e-3
T_BOUNDS = (1e-2, 1e2)  # temperature search range; a fit ending on a bound is reported in ``warnings``
FORMAT = "calrl.calibrator/1"  # "format" of a calibrator file; another value is refused


def _check_confidence(conf: torch.Tensor, name: str = "confidence") -> torch.Tensor:
    if not isinstance(conf, torch.Tensor):
        raise InputError(f"{name} must be a tensor, got {type(conf).__name__}", field=name)
    c = conf.detach().to(torch.float64).reshape(-1)
    if c.numel() and (not bool(torch.isfinite(c).all()) or bool((c < 0).any()) or bool((c > 1).any())):
        raise InputError(f"{name} values must be finite and in [0, 1]", field=name)
    return c


def _check_inputs(confidence: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = _check_confidence(confidence)
    if not isinstance(correct, torch.Tensor):
        raise InputError(f"correct must be a tensor, got {type(correct).__name__}", field="correct")
    y = correct.detach().reshape(-1).to(device=c.device, dtype=torch.float64)
    if c.numel() != y.numel():
        raise InputError(f"confidence has {c.numel()} items but correct has {y.numel()}", field="correct")
    if c.numel() == 0:
        raise InputError("cannot fit a calibrator on zero items", field="confidence")
    if not bool(((y == 0) | (y == 1)).all()):
        raise InputError("correct values must be 0/1 or bool", field="correct")
    return c, y


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(EPS, 1 - EPS)
    return torch.log(p) - torch.log1p(-p)


def _nll(p: torch.Tensor, y: torch.Tensor) -> float:
    p = p.clamp(EPS, 1 - EPS)
    return float(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean())


def _nll_of_logits(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z, stable for any z
    return (torch.nn.functional.softplus(z) - y * z).mean()


def _golden_section(f, lo: float, hi: float, tol: float = 1e-10, max_iter: int = 200) -> float:
    """Minimiser of a unimodal ``f`` on [lo, hi]."""
    inv_phi = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(max_iter):
        if b - a < tol:
            break
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
    x = (a + b) / 2
    return min((x, lo, hi), key=f)


def _fit_temperature(c: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    # NLL(1/T) is convex in 1/T (logistic regression on one feature), hence unimodal in log T
    z = _logit(c)
    if float(z.abs().max()) == 0.0:  # every confidence is 0.5: the temperature has no effect
        return {"temperature": 1.0}
    log_t = _golden_section(lambda s: float(_nll_of_logits(z / math.exp(s), y)),
                            math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1]))
    return {"temperature": math.exp(log_t)}


def _fit_platt(c: torch.Tensor, y: torch.Tensor, max_iter: int = 100) -> dict[str, float]:
    """Logistic regression of correctness on logit(confidence) by Newton's method with backtracking.

    The slope is constrained to be >= 0 (a calibrator must not reverse the confidence order); the
    NLL is convex, so when the free optimum has a negative slope the constrained one has slope 0 and
    the bias is the logit of the accuracy.
    """
    z = _logit(c)
    x = torch.stack([z, torch.ones_like(z)], dim=1)
    w = torch.zeros(2, dtype=torch.float64, device=c.device)
    loss = _nll_of_logits(x @ w, y)
    for _ in range(max_iter):
        s = torch.sigmoid(x @ w)
        grad = x.T @ (s - y) / len(y)
        hess = (x * (s * (1 - s)).unsqueeze(1)).T @ x / len(y) + 1e-12 * torch.eye(2, dtype=x.dtype,
                                                                                     device=x.device)
        if float(grad.abs().max()) < 1e-12:
            break
        step = torch.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-10:
            candidate = w - t * step
            new_loss = _nll_of_logits(x @ candidate, y)
            if new_loss <= loss:
                break
            t /= 2
        else:
            break
        improved = float(loss - new_loss)
        w, loss = candidate, new_loss
        if improved < 1e-15:
            break
    a, b = float(w[0]), float(w[1])
    if a < 0:
        acc = float(y.mean())
        a, b = 0.0, math.log(max(acc, EPS)) - math.log(max(1 - acc, EPS))
    return {"a": a, "b": b}


def _pool_adjacent_violators(values: list[float], weights: list[float]) -> list[float]:
    """Non-decreasing least-squares fit to ``values`` (in order) with ``weights``."""
    means: list[float] = []
    wsum: list[float] = []
    sizes: list[int] = []
    for v, w in zip(values, weights):
        means.append(v)
        wsum.append(w)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            w_new = wsum[-2] + wsum[-1]
            m_new = (means[-2] * wsum[-2] + means[-1] * wsum[-1]) / w_new
            means[-2:], wsum[-2:] = [m_new], [w_new]
            sizes[-2:] = [sizes[-2] + sizes[-1]]
    fitted: list[float] = []
    for m, k in zip(means, sizes):
        fitted.extend([m] * k)
    return fitted


def _fit_isotonic(c: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    """Isotonic regression: ties in confidence are pooled first, then PAV; knots where the level changes."""
    xs, inverse = torch.unique(c, sorted=True, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(xs)).to(torch.float64)
    sums = torch.zeros(len(xs), dtype=torch.float64, device=c.device).index_add_(0, inverse, y)
    fitted = _pool_adjacent_violators((sums / counts).tolist(), counts.tolist())
    knots_x, knots_y = [], []
    for x, v in zip(xs.tolist(), fitted):
        if not knots_y or v != knots_y[-1]:
            knots_x.append(x)
            knots_y.append(v)
    return {"x": knots_x, "y": knots_y}


def _fit_histogram(c: torch.Tensor, y: torch.Tensor, n_bins: int) -> dict[str, Any]:
    idx = bin_index(c, n_bins)
    counts = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    hits = torch.zeros(n_bins, dtype=torch.float64, device=c.device).index_add_(0, idx, y)
    acc = [float(h / k) if k > 0 else None for h, k in zip(hits.tolist(), counts.tolist())]
    return {"n_bins": n_bins, "accuracy": acc, "count": [int(k) for k in counts.tolist()]}


@dataclass
class Calibrator:
    """A fitted map from stated confidence to recalibrated confidence.

    ``params``: temperature ``{"temperature"}``; platt ``{"a", "b"}`` (sigmoid(a * logit(p) + b));
    isotonic ``{"x", "y"}`` (step function: the value of the last knot at or below p, the first
    knot's value below it); histogram ``{"n_bins", "accuracy" (None for an empty bin: identity),
    "count"}``. ``n``, ``nll_before`` and ``nll_after`` describe the fit on its own data.
    """

    method: str
    params: dict[str, Any]
    n: int = 0
    nll_before: float = float("nan")
    nll_after: float = float("nan")
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def apply(self, conf: torch.Tensor) -> torch.Tensor:
        """Recalibrated confidences, same shape, dtype (floating) and device as ``conf``, in [0, 1]."""
        c = _check_confidence(conf)
        out_dtype = conf.dtype if conf.is_floating_point() else torch.float32
        if self.method == "temperature":
            out = torch.sigmoid(_logit(c) / self.params["temperature"])
        elif self.method == "platt":
            out = torch.sigmoid(self.params["a"] * _logit(c) + self.params["b"])
        elif self.method == "isotonic":
            kx = torch.tensor(self.params["x"], dtype=torch.float64, device=c.device)
            ky = torch.tensor(self.params["y"], dtype=torch.float64, device=c.device)
            pos = torch.searchsorted(kx, c, right=True) - 1
            out = ky[pos.clamp(min=0)]
        elif self.method == "histogram":
            n_bins = int(self.params["n_bins"])
            table = torch.tensor([float("nan") if a is None else a for a in self.params["accuracy"]],
                                 dtype=torch.float64, device=c.device)
            looked_up = table[bin_index(c, n_bins)]
            out = torch.where(torch.isnan(looked_up), c, looked_up)
        else:
            raise InputError(f"unknown calibration method {self.method!r}; known: {', '.join(METHODS)}",
                             field="method")
        return out.clamp(0.0, 1.0).reshape(conf.shape).to(out_dtype)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (method, parameters, fit statistics)."""
        return {"format": FORMAT, "method": self.method, "params": self.params, "n": self.n,
                "nll_before": self.nll_before, "nll_after": self.nll_after, "eps": EPS,
                "warnings": list(self.warnings), **self.extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibrator:
        """Rebuild a calibrator written by ``to_dict``; InputError naming the bad field otherwise."""
        if not isinstance(d, Mapping):
            raise InputError("a calibrator must be a JSON object")
        if d.get("format") != FORMAT:
            found = "missing" if "format" not in d else f"{d['format']!r}"
            raise InputError(f"unsupported calibrator format ({found}); this calrl reads {FORMAT!r}",
                             field="format")
        method = d.get("method")
        if method not in METHODS:
            raise InputError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}",
                             field="method")
        params = d.get("params")
        if not isinstance(params, Mapping):
            raise InputError("missing or not an object", field="params")
        required = {"temperature": ("temperature",), "platt": ("a", "b"), "isotonic": ("x", "y"),
                    "histogram": ("n_bins", "accuracy")}[method]
        for key in required:
            if key not in params:
                raise InputError(f"missing parameter {key!r} for method {method!r}", field="params")
        _validate_params(method, params)
        known = {"format", "method", "params", "n", "nll_before", "nll_after", "eps", "warnings"}
        stats = {}
        for key, default in (("n", 0), ("nll_before", float("nan")), ("nll_after", float("nan"))):
            value = d.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise InputError(f"expected a number or null, got {value!r}", field=key)
            stats[key] = default if value is None else value
        warnings = d.get("warnings") or []
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise InputError("expected a list of strings", field="warnings")
        return cls(method=method, params=dict(params), n=int(stats["n"]), nll_before=float(stats["nll_before"]),
                   nll_after=float(stats["nll_after"]), warnings=list(warnings),
                   extra={k: v for k, v in d.items() if k not in known})


def _is_number(v: Any) -> bool:
    """A finite number a float holds (an integer of 400 digits is not: ``math.isfinite`` of it overflows)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e308


def _validate_params(method: str, p: Mapping[str, Any]) -> None:
    def bad(msg: str) -> InputError:
        return InputError(msg, field="params")

    if method == "temperature":
        if not _is_number(p["temperature"]) or p["temperature"] <= 0:
            raise bad("temperature must be a positive number")
    elif method == "platt":
        if not (_is_number(p["a"]) and _is_number(p["b"])):
            raise bad("a and b must be finite numbers")
    elif method == "isotonic":
        xs, ys = p["x"], p["y"]
        if not (isinstance(xs, list) and isinstance(ys, list) and xs and len(xs) == len(ys)
                and all(_is_number(v) for v in xs + ys)):
            raise bad("x and y must be non-empty lists of numbers of equal length")
        if any(b <= a for a, b in itertools.pairwise(xs)) or any(b < a for a, b in itertools.pairwise(ys)):
            raise bad("isotonic knots must be increasing in x and non-decreasing in y")
        if any(not 0 <= v <= 1 for v in xs + ys):
            raise bad("isotonic knots must lie in [0, 1]")
    elif method == "histogram":
        n_bins, acc = p["n_bins"], p["accuracy"]
        check_bins(n_bins, field="params.n_bins")
        if not isinstance(acc, list) or len(acc) != n_bins or \
                any(a is not None and not (_is_number(a) and 0 <= a <= 1) for a in acc):
            raise bad("accuracy must be a list of n_bins numbers in [0, 1] or null")


def fit_calibrator(confidence: torch.Tensor, correct: torch.Tensor, method: str = "temperature", *,
                   n_bins: int = DEFAULT_BINS) -> Calibrator:
    """Fit a calibrator of ``method`` (temperature | platt | isotonic | histogram) on one split."""
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}",
                         field="method")
    check_bins(n_bins, field="n_bins")
    c, y = _check_inputs(confidence, correct)
    if method in ("temperature", "platt") and bool((y == y[0]).all()):
        label = "correct" if bool(y[0]) else "wrong"
        raise InputError(f"all {c.numel()} items are {label}: {method} scaling needs both correct and wrong "
                         "items (fit on more data, or use isotonic or histogram)", field="correct")
    if method == "temperature":
        params: dict[str, Any] = _fit_temperature(c, y)
    elif method == "platt":
        params = _fit_platt(c, y)
    elif method == "isotonic":
        params = _fit_isotonic(c, y)
    else:
        params = _fit_histogram(c, y, n_bins)
    cal = Calibrator(method=method, params=params, n=int(c.numel()), nll_before=_nll(c, y))
    cal.nll_after = _nll(cal.apply(c), y)
    if method == "temperature":
        t = params["temperature"]
        if any(math.isclose(t, bound, rel_tol=1e-6) for bound in T_BOUNDS):
            cal.warnings.append(f"the temperature ended on a bound of its search range {T_BOUNDS} ({t:g}): "
                                "the fit set is (nearly) separable by confidence; the calibrator may "
                                "overfit it")
    return cal
