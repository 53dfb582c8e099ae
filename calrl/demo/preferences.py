"""Stage 2 of the study: the raters' data, which carries the documented human bias.

Simulated raters compare two responses to the same question. They prefer the correct one when exactly
one is correct (whatever the stated confidences), and, when both are correct or both are wrong, they
prefer the one stated with more confidence (Leng et al., arXiv 2410.09724, methods.md section 1). The
second rule is the bias: it rewards confidence on wrong answers too.

Kinds of pair (shares set by :class:`PreferenceConfig`): ``correctness`` (fact checks: one right, one wrong,
each with a random stated confidence, or both without one), ``both-correct`` and ``both-wrong`` (the
same answer stated with two different confidences), ``statement`` (the same answer, right or wrong, stated as
the prompt asks, against it without the statement or with stray text after it: raters prefer the one that follows
the instruction), and ``abstention`` (an answer, right or wrong, against "I don't know": raters prefer the answer,
as they rate refusals unhelpful). Without the ``statement`` pairs no comparison ties a malformed response to the
well-formed one, so where the reward model put them was left to chance: under one MKL code path it scored a wrong
answer alone as a wrong answer stated at 4-5 of 10 (vanilla PPO dropped statements instead of raising them), and
any text after the statement 8-10 points above the statement alone (a policy learnt to write "Confidence: 4 9",
which the reward model read as 9 and the parser as 4). The raters hold the registry of the world, so they can
check an answer about anyone, the people the policy never saw included: a reward model that does not know
those answers are wrong cannot teach the policy to doubt them (seen: PPO-M and PPO-C raised the stated
confidence on the never-seen people nearly as much as PPO). :func:`build_factcheck_rows` gives the fact
checks alone, with or without the confidence statements (the first reward stage reads the answers alone).
Rows are conversational (``prompt`` = the elicitation instruction and the question in one user message,
as calrl's PPO hands a prompt to a reward model with its own tokenizer; ``chosen``/``rejected`` = one
assistant message) so the reward model reads exactly the text PPO later scores.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from calrl.confidence import format_confidence, strip_confidence
from calrl.demo.sft import ABSTAIN_TEXT, answer_text, prompt_messages
from calrl.demo.world import World

KINDS = ("correctness", "both-correct", "both-wrong", "statement", "abstention")


@dataclass
class PreferenceConfig:
    """The raters' comparisons. ``correctness`` pairs are fact checks of answers stated with confidences
    (no bias: the right one wins whatever the confidences); the ``both-*`` pairs carry the bias."""

    n_pairs: int = 4000
    correctness_share: float = 0.4
    # share of the fact checks whose two answers carry no confidence statement: PPO-C's reward model scores
    # responses with the statement removed, so it must keep reading answers alone well (without these, PPO-C's
    # policy found a city the ordinary RM scored high for anyone, and answered it to 11 of 40 well-known people)
    answer_alone_share: float = 0.25
    both_correct_share: float = 0.2
    both_wrong_share: float = 0.2
    statement_share: float = 0.1  # the rest are abstention pairs
    seed: int = 0


def _fact_check(world: World, item: Any, rng: random.Random) -> tuple[str, str]:
    """(right answer, wrong answer) to ``item``, each with a random stated confidence on the 0-10 grid."""
    chosen = answer_text(item.reference[0], rng.randint(0, 10) / 10)
    rejected = answer_text(world.wrong_answer(item, rng), rng.randint(0, 10) / 10)
    return chosen, rejected


def _malformed(world: World, item: Any, stated: str, rng: random.Random) -> str:
    """``stated`` (an answer and its confidence statement) without the statement, or followed by stray text: a
    number, a period, a second statement or a city."""
    form = rng.randrange(4)
    if form == 0:
        return strip_confidence(stated)
    tails = (f" {rng.randint(0, 10)}", ".", f" {format_confidence(rng.randint(0, 10) / 10, '0-10')}",
             f" {world.wrong_answer(item, rng)}")
    return stated + tails[form - 1]


def _two_levels(rng: random.Random) -> tuple[float, float]:
    """Two different stated confidences on the 0-10 grid, (higher, lower)."""
    a, b = rng.sample(range(11), 2)
    return max(a, b) / 10, min(a, b) / 10


def _stated_answer(world: World, item: Any, rng: random.Random) -> str:
    """The right answer or a wrong one (even odds), stated with a random confidence on the 0-10 grid."""
    answer = item.reference[0] if rng.random() < 0.5 else world.wrong_answer(item, rng)
    return answer_text(answer, rng.randint(0, 10) / 10)


def build_preference_rows(world: World, config: PreferenceConfig | None = None) -> list[dict[str, Any]]:
    """``config.n_pairs`` preference pairs on the world's preference prompts (drawn with replacement), with
    their kind recorded."""
    config = config or PreferenceConfig()
    rng = random.Random(config.seed)
    # the upper end of each kind's share of [0, 1), in KINDS order (abstention: the rest)
    bounds = list(accumulate((config.correctness_share, config.both_correct_share, config.both_wrong_share,
                              config.statement_share)))
    rows = []
    for _ in range(config.n_pairs):
        item = rng.choice(world.preference_items)
        kind = KINDS[bisect_right(bounds, rng.random())]
        if kind == "correctness":
            chosen, rejected = _fact_check(world, item, rng)
            if rng.random() < config.answer_alone_share:
                chosen, rejected = strip_confidence(chosen), strip_confidence(rejected)
        elif kind in ("both-correct", "both-wrong"):
            answer = item.reference[0] if kind == "both-correct" else world.wrong_answer(item, rng)
            high, low = _two_levels(rng)
            chosen, rejected = answer_text(answer, high), answer_text(answer, low)
        elif kind == "statement":
            chosen = _stated_answer(world, item, rng)
            rejected = _malformed(world, item, chosen, rng)
        else:
            chosen, rejected = _stated_answer(world, item, rng), ABSTAIN_TEXT
        rows.append({
            "prompt": prompt_messages(item),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "kind": kind,
            "group": item.slice["group"],
        })
    return rows


def build_factcheck_rows(world: World, n: int, *, seed: int, with_confidence: bool = True) -> list[dict[str, Any]]:
    """``n`` correct-vs-wrong pairs about anyone in the world, each side with a random stated confidence,
    or (``with_confidence=False``) the answers alone, exactly as PPO-C hands a response to the reward model
    (:func:`calrl.confidence.strip_confidence`).

    These are the raters' fact checks, without the confidence bias. The answers alone are the first reward
    stage of the study (``rm_base``): a 2-layer reward model learns which city is right quickly from them, and
    slowly and on some seeds not at all when a random confidence statement follows every answer (seen: held-out
    accuracy 0.5-0.7 after 9,000 pairs on two of five seeds, 0.92-0.98 on every seed with this curriculum).
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        item = rng.choice(world.eval_items)
        chosen, rejected = _fact_check(world, item, rng)
        if not with_confidence:
            chosen, rejected = strip_confidence(chosen), strip_confidence(rejected)
        rows.append({
            "prompt": prompt_messages(item),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "kind": "correctness",
            "group": item.slice["group"],
        })
    return rows
