"""Load a reward or value model (a one-output sequence classifier), refusing one whose head would be random.

``AutoModelForSequenceClassification.from_pretrained`` on a checkpoint without a score head (a causal LM, or an
OpenRLHF reward model whose head is ``value_head``) initialises the head at random and only logs a load report:
PPO would then train against noise. :func:`load_sequence_classifier` asks transformers what it could not load
(``output_loading_info=True``) and refuses, in one line naming the missing weights, unless a new head is what
the caller wants (``calrl train-rm`` starting a reward model from a base model).
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import AutoModelForSequenceClassification
from transformers.utils import logging as hf_logging

from calrl.errors import InputError

logger = logging.getLogger(__name__)

CONVERT_HINT = "convert it first: calrl convert-rm --from openrlhf {source} --out DIR"


def load_sequence_classifier(source: str, *, role: str = "reward model", allow_new_head: bool = False,
                             num_labels: int | None = 1, **kwargs: Any) -> Any:
    """A one-label ``AutoModelForSequenceClassification`` from ``source`` whose every weight was loaded
    (``num_labels=None``: as many labels as its config says).

    ``allow_new_head``: a missing score head is initialised (training a reward model from a base model);
    other missing weights, and an OpenRLHF value head left unused, are refused all the same.
    """
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report becomes the one-line error (or warning) below
    try:
        if num_labels is not None:
            kwargs["num_labels"] = num_labels
        model, info = AutoModelForSequenceClassification.from_pretrained(source, output_loading_info=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, hub errors: one line
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"cannot load the {role} '{source}': {type(exc).__name__}: {text}") from None
    finally:
        hf_logging.set_verbosity(level)
    check_loading_info(model, info, source, role=role, allow_new_head=allow_new_head)
    fresh = [k for k in info.get("missing_keys") or [] if not k.startswith(f"{model.base_model_prefix}.")]
    if fresh:
        logger.warning("%s '%s': %s initialised at random (a reward model trained from a base model)", role,
                       source, ", ".join(sorted(fresh)))
    return model


def check_loading_info(model: Any, info: dict[str, Any], source: str, *, role: str = "reward model",
                       allow_new_head: bool = False) -> None:
    """Refuse a model some of whose weights were freshly initialised (see :func:`load_sequence_classifier`)."""
    prefix = f"{model.base_model_prefix}."
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = [str(m[0]) if isinstance(m, (tuple, list)) else str(m) for m in info.get("mismatched_keys") or []]
    head = [k for k in missing if not k.startswith(prefix)]
    value_head = [k for k in unexpected if k.split(".")[0] in ("value_head", "v_head")]
    refused = [k for k in missing if k.startswith(prefix)] + mismatched + ([] if allow_new_head and not value_head
                                                                            else head)
    if not refused:
        return
    shown = ", ".join(refused[:6]) + (f" and {len(refused) - 6} more" if len(refused) > 6 else "")
    # what is missing and what to do first, the path last: a long path is what the one-line formatter cuts
    why = f"the {role} lacks trained weights that would be initialised at random: {shown}"
    if value_head:
        why += f" (it holds an OpenRLHF value head, {value_head[0]}: {CONVERT_HINT.format(source=source)})"
    elif head:
        why += " (a base or causal LM, not a reward model: train one with calrl train-rm)"
    raise InputError(why + f"; {role}: '{source}'")
