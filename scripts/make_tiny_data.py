"""Regenerate the tiny training/eval data shipped in ``calrl/data/tiny`` (deterministic, seed 0).

Small arithmetic questions with known answers: ``qa.jsonl`` (prompt, reference) for PPO/GRPO/RLOO,
``pairs.jsonl`` (prompt, chosen, rejected: the right sum vs a wrong one) for reward modeling and
``eval.jsonl`` (id, question, reference, slice) for the per-epoch calibration eval. Used by the tiny CPU
recipes in ``configs/tests``.

    python scripts/make_tiny_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "calrl" / "data" / "tiny"


def questions(rng: random.Random, n: int, taken: set[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    while len(out) < n:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        if (a, b) not in taken:
            taken.add((a, b))
            out.append((a, b))
    return out


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    rng = random.Random(0)
    taken: set[tuple[int, int]] = set()
    train = questions(rng, 32, taken)
    held_out = questions(rng, 16, taken)
    OUT.mkdir(parents=True, exist_ok=True)
    write(OUT / "qa.jsonl", [{"prompt": f"what is {a} + {b} ?", "reference": str(a + b)} for a, b in train])
    pairs = []
    for a, b in train:
        offset = rng.choice([-2, -1, 1, 2])
        wrong = a + b + offset if a + b + offset >= 0 else a + b - offset
        pairs.append({"prompt": f"what is {a} + {b} ?", "chosen": f"the answer is {a + b} .",
                      "rejected": f"the answer is {wrong} ."})
    write(OUT / "pairs.jsonl", pairs)
    write(OUT / "eval.jsonl", [
        {"id": f"tiny-{i}", "question": f"what is {a} + {b} ?", "reference": [str(a + b)],
         "slice": {"difficulty": "carry" if a + b >= 10 else "no_carry"}}
        for i, (a, b) in enumerate(held_out)])


if __name__ == "__main__":
    main()
