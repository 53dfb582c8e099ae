"""Time trl 1.12.0's PPO (`trl.experimental.ppo.PPOTrainer`) on the tiny parity setup.

Runs in scripts/ppo_parity/.venv (setup_venv.sh); does not import calrl.

    scripts/ppo_parity/.venv/bin/python scripts/ppo_parity/bench_trl112.py [--warmup 3] [--steps 20]

Builds the same models, data and PPO hyperparameters as record_trl112.py (tiny_setup.py +
tiny_setup.PPO_HPARAMS), runs warmup + steps PPO updates with torch.set_num_threads(1), times each
update as the wall clock between consecutive `on_step_end` callbacks (the first from
`on_train_begin`), drops the warm-up updates and prints one JSON line with the median.
An update = rollout generation + reference/value/reward forwards + GAE + the PPO epochs + logging.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_trl112
import tiny_setup
import torch
import trl
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    def __init__(self):
        self.marks: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(time.perf_counter())

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=3, help="untimed updates first (K)")
    ap.add_argument("--steps", type=int, default=20, help="timed updates (N)")
    args = ap.parse_args(argv)
    hp = tiny_setup.PPO_HPARAMS
    updates = args.warmup + args.steps
    batch = hp["per_device_train_batch_size"] * hp["gradient_accumulation_steps"]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = record_trl112.make_trainer(updates * batch, tmp)  # sets torch.set_num_threads(1)
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    d = timer.durations()
    assert len(d) == updates, (len(d), updates)
    timed = d[args.warmup :]
    print(
        json.dumps(
            {
                "impl": f"trl-{trl.__version__}",
                "median_step_s": statistics.median(timed),
                "steps": len(timed),
                "warmup": args.warmup,
                "mean_step_s": statistics.fmean(timed),
                "min_step_s": min(timed),
                "max_step_s": max(timed),
                "threads": torch.get_num_threads(),
                "batch_size": batch,
                "response_length": hp["response_length"],
                "num_ppo_epochs": hp["num_ppo_epochs"],
                "num_mini_batches": hp["num_mini_batches"],
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
