"""Generate the sample predictions file shipped in ``evals/samples/`` (an overconfident model).

Deterministic from ``--seed``. Each item gets a latent probability of being right from its domain and
difficulty; the simulated model answers correctly with that probability but *states* a confidence
pushed towards the top of the scale (the RLHF overconfidence pattern), writes it in the forms models
use ("Confidence: 8", "80%", "8/10", "confidence 0.8"), sometimes hedges in words instead, sometimes
states nothing, and abstains on some hard items. A share of items carries extra sampled answers, drawn
from the same latent probability, for the consistency signals.

    python scripts/make_sample_predictions.py --n 400 --seed 7 --out evals/samples/overconfident_model.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import string
from collections.abc import Callable
from pathlib import Path

DIFFICULTY_P = {"easy": 0.88, "medium": 0.62, "hard": 0.33}  # latent P(correct)
DOMAIN_SHIFT = {"arithmetic": 0.05, "geography": 0.0, "units": -0.05, "medicine": -0.12}
OVERCONFIDENCE = 0.28  # stated ~ p + OVERCONFIDENCE * (1.6 p - 0.3): a little under at low p, far over at high
HEDGES = {"low": ["I'm not sure, but maybe", "I guess", "Possibly"],
          "mid": ["I think", "Probably", "It seems likely that"],
          "high": ["Almost certainly", "I'm fairly confident that"]}
ABSTENTIONS = ["I don't know.", "I cannot answer that with the information given.",
               "I'm not able to answer this question."]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
            ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Norway", "Oslo"), ("Egypt", "Cairo"),
            ("Chile", "Santiago"), ("Vietnam", "Hanoi"), ("Turkey", "Ankara"), ("Brazil", "Brasilia"),
            ("Morocco", "Rabat"), ("Nigeria", "Abuja"), ("Switzerland", "Bern"), ("Pakistan", "Islamabad"),
            ("New Zealand", "Wellington"), ("Myanmar", "Naypyidaw"), ("Kazakhstan", "Astana"),
            ("Bolivia", "Sucre")]
CITIES = ["Sydney", "Toronto", "Istanbul", "Lagos", "Zurich", "Karachi", "Auckland", "Yangon", "Almaty",
          "La Paz", "Rio de Janeiro", "Casablanca", "Osaka", "Marseille", "Mombasa", "Cusco", "Bergen"]
DRUGS = [("bacterial pneumonia", "an antibiotic"), ("type 1 diabetes", "insulin"),
         ("anaphylaxis", "epinephrine"), ("hypothyroidism", "levothyroxine"),
         ("opioid overdose", "naloxone"), ("iron-deficiency anaemia", "oral iron"),
         ("acute gout", "colchicine"), ("migraine", "a triptan"), ("heparin overdose", "protamine"),
         ("malaria", "artemisinin combination therapy")]
UNITS = [("kilometres", "metres", 1000), ("kilograms", "grams", 1000), ("hours", "minutes", 60),
         ("litres", "millilitres", 1000), ("minutes", "seconds", 60), ("feet", "inches", 12)]


def make_item(i: int, rng: random.Random) -> dict:
    domain = rng.choice(sorted(DOMAIN_SHIFT))
    difficulty = rng.choices(["easy", "medium", "hard"], weights=[0.35, 0.4, 0.25])[0]
    question, reference, choices, wrong = QUESTION_MAKERS[domain](rng, difficulty)
    p = min(0.97, max(0.03, DIFFICULTY_P[difficulty] + DOMAIN_SHIFT[domain] + rng.gauss(0, 0.08)))

    row: dict = {"id": f"{domain[:4]}-{i:04d}", "question": question, "reference": reference,
                 "slice": {"domain": domain, "difficulty": difficulty}}
    if choices is not None:
        row["choices"] = choices

    if rng.random() < 0.5 * (1 - p) ** 2:  # abstains mostly where it would likely be wrong
        row["response"] = rng.choice(ABSTENTIONS)
        return row

    answer = reference if rng.random() < p else rng.choice(wrong)
    stated = min(1.0, max(0.0, p + OVERCONFIDENCE * (1.6 * p - 0.3) + rng.gauss(0, 0.1)))
    row["response"] = _with_confidence(answer, stated, rng)

    if rng.random() < 0.35:
        row["samples"] = [f"{reference if rng.random() < p else rng.choice(wrong)}" for _ in range(5)]
    return row


def _with_confidence(answer: str, stated: float, rng: random.Random) -> str:
    """Write the answer with its stated confidence in one of the forms models produce."""
    form = rng.choices(["0-10", "percent", "slash", "unit", "hedge", "none"],
                       weights=[0.5, 0.15, 0.08, 0.07, 0.14, 0.06])[0]
    tens = round(stated * 10)
    if form == "0-10":
        return f"The answer is {answer}. Confidence: {tens}"
    if form == "percent":
        return f"{answer}. Confidence: {round(stated * 20) * 5}%"
    if form == "slash":
        return f"{answer} ({tens}/10)"
    if form == "unit":
        return f"Answer: {answer}. confidence {tens / 10:.1f}"
    if form == "hedge":
        level = "low" if stated < 0.5 else "mid" if stated < 0.85 else "high"
        return f"{rng.choice(HEDGES[level])} {answer}."
    return f"The answer is {answer}."


def _arithmetic(rng: random.Random, difficulty: str):
    digits = {"easy": 1, "medium": 2, "hard": 3}[difficulty]
    a, b = rng.randint(10 ** (digits - 1) + 1, 10 ** digits - 1), rng.randint(2, 10 ** digits - 1)
    op = rng.choice(["+", "*"]) if difficulty != "easy" else "+"
    value = a + b if op == "+" else a * b
    wrong = [str(value + d) for d in (-10, -1, 1, 2, 10)] + [str(value * 10)]
    return f"What is {a} {op} {b}?", str(value), None, wrong


def _geography(rng: random.Random, difficulty: str):
    country, capital = rng.choice(CAPITALS)
    wrong = rng.sample([c for c in CITIES + [cap for _, cap in CAPITALS] if c != capital], 4)
    return f"What is the capital of {country}?", capital, None, wrong


def _units(rng: random.Random, difficulty: str):
    big, small, factor = rng.choice(UNITS)
    amount = {"easy": rng.randint(2, 9), "medium": rng.randint(11, 99),
              "hard": rng.randint(101, 999) / 10}[difficulty]
    value = amount * factor
    text = f"{value:g}"
    wrong = [f"{value / factor ** 2:g}", f"{value * 10:g}", f"{value / 10:g}", f"{value + factor:g}"]
    return f"How many {small} are in {amount:g} {big}?", text, None, wrong


def _medicine(rng: random.Random, difficulty: str):
    k = rng.randrange(len(DRUGS))
    condition, treatment = DRUGS[k]
    options = [treatment] + rng.sample([t for j, (_, t) in enumerate(DRUGS) if j != k], 3)
    rng.shuffle(options)
    letters = string.ascii_uppercase[: len(options)]
    correct_letter = letters[options.index(treatment)]
    choices = [f"{letter}. {opt}" for letter, opt in zip(letters, options, strict=True)]
    question = f"Which is the usual first-line treatment for {condition}? " + " ".join(choices)
    wrong = [letter for letter in letters if letter != correct_letter]
    return question, correct_letter, list(options), wrong


QUESTION_MAKERS: dict[str, Callable] = {"arithmetic": _arithmetic, "geography": _geography,
                                        "units": _units, "medicine": _medicine}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("evals/samples/overconfident_model.jsonl"))
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    rows = [make_item(i, rng) for i in range(args.n)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    tmp.replace(args.out)
    print(f"wrote {len(rows)} predictions to {args.out}")


if __name__ == "__main__":
    main()
