"""Benchmark: overhead of the PPO-C reward pipeline relative to a vanilla TRL PPO step.

Runs TRL's own ``PPOTrainer`` (vanilla) and ``CalibratedPPOTrainer`` with PPO-C (threshold) on the same
tiny CPU models, interleaved, several repetitions, and reports per-step medians:

- ``ratio``: PPO-C step time / vanilla step time, end to end (wall clock and process CPU time; median
  and minimum over steps; on a busy shared machine wall-clock medians are noisy, CPU time and minima
  are steadier);
- ``PPO-C overhead``: CPU time of the PPO-C reward computation (pipeline, RM forward included) minus
  that of vanilla TRL's reward-model call, per step, as a fraction of the median vanilla step; and the
  pipeline's work besides the RM forward (decode, parse, strip, re-tokenise, abstention, PPO-C).
  These are measured inside the process and are steady even on a busy machine.

Two policies: ``scripted`` (every response ends in "confidence: D", so every row is stripped and
re-tokenised: the worst case) and ``random`` (a random tiny LM, mostly no confidence statement: TRL's
tokens are reused). Usage: ``python scripts/bench_reward_pipeline.py [--steps 6 --repeats 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch
from datasets import Dataset
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging
from trl.experimental.ppo import PPOConfig, PPOTrainer
from trl.experimental.ppo import ppo_trainer as trl_ppo_module

from calrl.testing.tiny import (
    build_scripted_causal_lm,
    build_tiny_causal_lm,
    build_tiny_reward_model,
    build_word_tokenizer,
)
from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer

QUESTIONS = ["what is 2 + 2 ?", "what is 3 + 1 ?", "what is 1 + 4 ?", "what is 2 + 3 ?",
             "what is 0 + 4 ?", "what is 1 + 1 ?", "what is 4 + 0 ?", "what is 6 - 2 ?"]
DIGITS = ("2", "5", "8")


def scripted_confidence_lm(tok, seed: int = 0):
    """A policy answering "4 confidence: D" (D drawn from 2, 5, 8): every rollout carries a confidence."""
    chain = [("<|assistant|>", ["4"]), ("4", ["confidence"]), ("confidence", [":"]), (":", list(DIGITS)),
             *[(d, [tok.eos_token]) for d in DIGITS]]
    return build_scripted_causal_lm(tok, chain, seed=seed)


class StepTimer(TrainerCallback):
    """Wall-clock and process CPU time of each PPO step (CPU time is less disturbed by other processes)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks = [(time.perf_counter(), time.process_time())]

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), time.process_time()))

    def step_times(self, kind: int) -> list[float]:
        return [b[kind] - a[kind] for a, b in zip(self.marks, self.marks[1:])][1:]  # drop the warm-up step


def _timed(fn, bucket: list[float]):
    def wrapper(*a, **k):
        t0 = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            bucket.append(time.process_time() - t0)
    return wrapper


def run_once(method: str, policy: str, steps: int, batch: int, response_length: int, out: Path) -> dict:
    tok = build_word_tokenizer(QUESTIONS)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QUESTIONS]
    data = Dataset.from_dict({"input_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in prompts] * 4})
    make_lm = scripted_confidence_lm if policy == "scripted" else build_tiny_causal_lm
    common = {"output_dir": str(out / f"{method}-{policy}"), "use_cpu": True, "report_to": "none", "seed": 0,
              "total_episodes": steps * batch, "per_device_train_batch_size": batch,
              "gradient_accumulation_steps": 1, "num_mini_batches": 1, "response_length": response_length,
              "num_ppo_epochs": 1, "stop_token": "eos", "num_sample_generations": 0, "save_strategy": "no",
              "disable_tqdm": True, "logging_steps": 1}
    timer = StepTimer()
    models = {"processing_class": tok, "model": make_lm(tok), "ref_model": make_lm(tok),
              "reward_model": build_tiny_reward_model(tok, seed=2),
              "value_model": build_tiny_reward_model(tok, seed=1), "train_dataset": data, "callbacks": [timer]}
    pipeline_s: list[float] = []
    rm_s: list[float] = []
    if method == "vanilla":
        trainer = PPOTrainer(args=PPOConfig(**common), **models)
        original = trl_ppo_module.get_reward
        timed_rm = _timed(original, pipeline_s)

        def rm_timed_get_reward(model, *a):  # time only the reward-model calls, as the pipeline replaces them
            return (timed_rm if model is trainer.reward_model else original)(model, *a)

        trl_ppo_module.get_reward = rm_timed_get_reward
    else:
        trainer = CalibratedPPOTrainer(args=CalibratedPPOConfig(**common, ppo_c_variant="threshold"), **models)
        pipe = trainer.reward_pipeline
        pipe.score_rollouts = _timed(pipe.score_rollouts, pipeline_s)
        pipe._rm_scorer = _timed(pipe._rm_scorer, rm_s)
    # TRL's loop calls gc.collect() twice per step; its cost grows with every object alive in the process
    # (earlier runs, datasets, imports) and dominated the step time here. Freezing the heap built so far
    # makes both methods pay only for their own objects, so the steps time the PPO work itself.
    gc.collect()
    gc.freeze()
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # TRL prints every log dict
            trainer.train()
    finally:
        gc.unfreeze()
        if method == "vanilla":
            trl_ppo_module.get_reward = original
    result = {"step_s": timer.step_times(0), "step_cpu_s": timer.step_times(1),
              "reward_per_step_s": sum(pipeline_s) / steps}
    if method != "vanilla":
        result["extra_per_step_s"] = (sum(pipeline_s) - sum(rm_s)) / steps
        result["parsable"] = 1.0 - pipe.missing_total / (steps * batch)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=16)
    parser.add_argument("--policy", choices=["scripted", "random", "both"], default="both")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest timings)")
    parser.add_argument("--out", default="/tmp/calrl_bench_reward_pipeline")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    policies = ["scripted", "random"] if args.policy == "both" else [args.policy]
    print(f"tiny calrl.testing.tiny LM (2 layers, hidden 64), batch {args.batch_size}, response_length {args.response_length}, "
          f"{args.steps} steps x {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    for policy in policies:
        wall = {"vanilla": [], "ppo_c": []}
        cpu = {"vanilla": [], "ppo_c": []}
        extra: list[float] = []
        reward = {"vanilla": [], "ppo_c": []}
        for _ in range(args.repeats):
            for method in ("vanilla", "ppo_c"):  # interleaved, so drift on a shared machine hits both
                res = run_once(method, policy, args.steps, args.batch_size, args.response_length, out)
                wall[method] += res["step_s"]
                cpu[method] += res["step_cpu_s"]
                reward[method].append(res["reward_per_step_s"])
                if method == "ppo_c":
                    extra.append(res["extra_per_step_s"])
                    parsable = res["parsable"]
        print(f"[{policy}] confidence parsable in {parsable:.0%} of PPO-C rollouts")
        for name, times in (("wall", wall), ("cpu", cpu)):
            med_v, med_c = statistics.median(times["vanilla"]), statistics.median(times["ppo_c"])
            min_v, min_c = min(times["vanilla"]), min(times["ppo_c"])
            print(f"[{policy}] {name} step time: vanilla median {med_v * 1e3:.1f} ms (min {min_v * 1e3:.1f}), "
                  f"PPO-C median {med_c * 1e3:.1f} ms (min {min_c * 1e3:.1f}); "
                  f"ratio median {med_c / med_v:.3f}, min {min_c / min_v:.3f}")
        med_extra, med_v = statistics.median(extra), statistics.median(cpu["vanilla"])
        rv, rc = statistics.median(reward["vanilla"]), statistics.median(reward["ppo_c"])
        print(f"[{policy}] pipeline work besides the RM forward: {med_extra * 1e3:.2f} ms CPU per step = "
              f"{med_extra / med_v:.2%} of a vanilla step")
        print(f"[{policy}] reward computation per step: vanilla RM call {rv * 1e3:.2f} ms, PPO-C pipeline "
              f"{rc * 1e3:.2f} ms; PPO-C overhead = {(rc - rv) / med_v:+.2%} of a vanilla step (target < 5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
