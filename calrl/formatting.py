"""How values leave calrl: :func:`json_safe` for JSON files, :func:`fmt` for reports, tables and the terminal.

The one home of both: every report (eval, compare, recalibrate, the demo, model cards) formats its
numbers with :func:`fmt`, and every JSON file calrl writes passes through :func:`json_safe` first.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

DECIMALS = 4  # decimals of a float in every report unless a caller asks for fewer


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON values, recursively: NaN and infinities become None, tensors and numpy
    arrays or scalars become numbers or lists, tuples become lists and mapping keys strings."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):  # torch.Tensor, numpy array / scalar
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def fmt(value: Any, digits: int = DECIMALS) -> str:
    """How a value appears in a report: ints as is, floats to ``digits`` decimals, None, NaN and
    infinities as ``n/a``, booleans as yes / no, anything else as its text."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # a 0-d tensor or numpy scalar
        value = value.tolist()
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return f"{number:.{digits}f}" if math.isfinite(number) else "n/a"
    return str(value)
