"""Shared by the callback tests and their torchrun worker: held-out items and a tiny policy that answers them
from a script, so the calibration metrics of an eval are known by hand.

The policy is a tiny Qwen2 fitted (150 full-batch steps, a few seconds on CPU) to answer each item with a
fixed answer and stated confidence; greedy decoding then reproduces the script exactly.
"""

from __future__ import annotations

import torch

from calrl.callbacks.calibration_eval import CalibrationEvalConfig
from calrl.data.heldout import EvalItem
from calrl.generation.prompts import ElicitationPrompt
from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer

ITEMS = [EvalItem(id=f"i{k}", question=f"what is {k} + 1 ?", reference=[str(k + 1)],
                  slice={"parity": "even" if k % 2 == 0 else "odd"}) for k in range(8)]
# item index -> (answer, stated confidence on 0-10 or None for an abstention)
SCRIPT = {0: ("1", 9), 1: ("2", 8), 2: ("5", 7), 3: ("4", 3), 4: ("5", 9), 5: ("9", 6), 6: ("7", 2),
          7: ("i don't know", None)}
PROMPT = ElicitationPrompt()

# Hand-computed from SCRIPT: answered (confidence, correct) =
# (.9,T) (.8,T) (.7,F) (.3,T) (.9,T) (.6,F) (.2,T);
# one abstention of 8. 15 equal-width bins: gaps .8 (.2) .7 (.3) .6 (.6) .7 (.7) .2 (.8) and 2 x .1 (.9).
EXPECTED = {
    "ece": 3.2 / 7,
    "brier": 2.04 / 7,
    "auroc": 0.6,  # correct-over-wrong pairs: .9, .8, .9 beat both wrong ones: 6 of 10
    "accuracy": 5 / 8,
    "refusal_rate": 1 / 8,
    "mean_confidence": 4.4 / 7,
    "slice_ece": {"even": 1.7 / 4, "odd": 1.5 / 3},
    # even: (.9,T) (.7,F) (.9,T) (.2,T); odd: (.8,T) (.3,T) (.6,F) and the abstention
    "slice_brier": {"even": (0.01 + 0.49 + 0.01 + 0.64) / 4, "odd": (0.04 + 0.49 + 0.36) / 3},
    "slice_refusal_rate": {"even": 0.0, "odd": 1 / 4},
    # the wrong answers, most confident first: item 2 says 5 at 0.7, item 5 says 9 at 0.6
    "confidently_wrong": [("i2", "5", 0.7), ("i5", "9", 0.6)],
}


def target_response(k: int) -> str:
    answer, confidence = SCRIPT[k]
    return answer if confidence is None else f"{answer}. Confidence: {confidence}"


def build_scripted_policy(steps: int = 150, seed: int = 0):
    """(model, tokenizer): a tiny causal LM that answers ``ITEMS`` as in ``SCRIPT`` under ``PROMPT``."""
    tokenizer = build_word_tokenizer([it.question for it in ITEMS] + [PROMPT.instruction()])
    model = build_tiny_causal_lm(tokenizer, seed=seed)
    texts = [f"{PROMPT.render(tokenizer, item)} {target_response(k)} {tokenizer.eos_token}"
             for k, item in enumerate(ITEMS)]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return model, tokenizer


def eval_config(**kw) -> CalibrationEvalConfig:
    """The callback tests' eval config: the scripted items, batch 4, 12 new tokens (``kw`` overrides)."""
    return CalibrationEvalConfig(**{"eval_items": ITEMS, "batch_size": 4, "max_new_tokens": 12, **kw})
