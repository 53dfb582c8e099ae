"""Stage 2 of the study: preference data that carries the documented human bias.

Simulated raters compare two responses to the same question. They prefer the correct one when exactly
one is correct (whatever the stated confidences), and, when both are correct or both are wrong, they
prefer the one stated with more confidence (Leng et al., arXiv 2410.09724, methods.md section 1). The
second rule is the bias: it rewards confidence on wrong answers too.

Kinds of pair (shares set by :class:`PreferenceConfig`): ``correctness`` (one right, one wrong, each with
a random stated confidence), ``both-correct`` and ``both-wrong`` (the same answer stated with two
different confidences), and ``abstention`` (an answer, right or wrong, against "I don't know": raters
prefer the answer, as they rate refusals unhelpful). Only questions whose answer the raters can check are
used (no never-seen people).
Rows are conversational (``prompt`` = the elicitation instruction and the question in one user message,
as calrl's PPO hands a prompt to a reward model with its own tokenizer; ``chosen``/``rejected`` = one
assistant message) so the reward model reads exactly the text PPO later scores.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from calrl.demo.sft import ABSTAIN_TEXT, answer_text, rm_prompt_messages
from calrl.demo.world import World

KINDS = ("correctness", "both-correct", "both-wrong", "abstention")


@dataclass
class PreferenceConfig:
    # Which answer is right the reward models learn first, from the raters' fact checks
    # (:func:`build_factcheck_rows`); these pairs carry mostly the confidence bias.
    correctness_share: float = 0.2
    both_correct_share: float = 0.3
    both_wrong_share: float = 0.35  # the rest are abstention pairs
    seed: int = 0


def _two_levels(rng: random.Random) -> tuple[float, float]:
    """Two different stated confidences on the 0-10 grid, (higher, lower)."""
    a, b = rng.sample(range(11), 2)
    return max(a, b) / 10, min(a, b) / 10


def build_preference_rows(world: World, config: PreferenceConfig | None = None) -> list[dict[str, Any]]:
    """One preference pair per preference prompt of the world, with its kind recorded."""
    config = config or PreferenceConfig()
    rng = random.Random(config.seed)
    rows = []
    for item in world.preference_items:
        truth = item.reference[0]
        draw = rng.random()
        if draw < config.correctness_share:
            kind = "correctness"
            chosen = answer_text(truth, rng.randint(0, 10) / 10)
            rejected = answer_text(world.wrong_answer(item, rng), rng.randint(0, 10) / 10)
        elif draw < config.correctness_share + config.both_correct_share + config.both_wrong_share:
            kind = "both-correct" if draw < config.correctness_share + config.both_correct_share else "both-wrong"
            answer = truth if kind == "both-correct" else world.wrong_answer(item, rng)
            high, low = _two_levels(rng)
            chosen, rejected = answer_text(answer, high), answer_text(answer, low)
        else:
            kind = "abstention"
            answer = truth if rng.random() < 0.5 else world.wrong_answer(item, rng)
            chosen, rejected = answer_text(answer, rng.randint(0, 10) / 10), ABSTAIN_TEXT
        rows.append({
            "prompt": rm_prompt_messages(item),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "kind": kind,
            "group": item.slice["group"],
        })
    return rows


def build_factcheck_rows(world: World, n: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` correct-vs-wrong pairs (each side with a random stated confidence) on people the raters can check.

    These are the raters' fact checks, without the confidence bias: the reward models first learn from them
    which answers are right (stage ``rm_base`` of the study), then the biased pairs.
    """
    rng = random.Random(seed)
    known = [item for item in world.eval_items if item.slice["group"] != "fact-never"]
    rows = []
    for _ in range(n):
        item = rng.choice(known)
        chosen = answer_text(item.reference[0], rng.randint(0, 10) / 10)
        rejected = answer_text(world.wrong_answer(item, rng), rng.randint(0, 10) / 10)
        rows.append({
            "prompt": rm_prompt_messages(item),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "kind": "correctness",
            "group": item.slice["group"],
        })
    return rows
