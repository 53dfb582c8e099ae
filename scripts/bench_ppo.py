"""Benchmark calrl's PPO: update time against trl 1.12's PPO, and the PPO-C reward pipeline's share of an update.

Part ``update`` (calrl vs trl 1.12.0, same run): both trainers are built on the SAME setup,
``scripts/ppo_parity/tiny_setup.build_all(setup)`` + ``tiny_setup.setup_hparams(setup)`` (``--setup bigger``, the
default: 4-layer Qwen2 policy, value and reward models, hidden 128, a 4,096-token vocabulary, batch 4, 32 response
tokens, one PPO epoch; ``--setup tiny``: the parity fixture's 2 layers, hidden 32, 47 tokens, 8 response tokens),
with ``torch.set_num_threads(1)``; an update is timed as the wall clock between consecutive ``on_step_end`` events
(the first from ``on_train_begin``), as ``scripts/ppo_parity/bench_trl112.py`` does, and as process CPU time over
the same span. Each side runs in its own fresh process, trl's in ``scripts/ppo_parity/.venv`` (made by
``bash scripts/ppo_parity/setup_venv.sh``), and the sides alternate (calrl, trl, calrl, trl, ...) so drift on a
shared machine hits both; the 1-minute load average is read before the first run and after each. Printed: each
side's median seconds per update, the ratio calrl/trl (target: <= 1, not slower), calrl's median time per phase
(generation, reference forward, rollout value forward, rewards, training forward, backward, optimiser step, the
rest: ``bench_ppo_timers.phase_timer``) and, with ``--trl-without-gc`` (``make bench-ppo`` passes it), trl with its
two ``gc.collect()`` calls per update made no-ops and the ratio against that (issue 21's target: <= 0.5).
``--torch-compile`` adds calrl with ``torch_compile: true`` (:mod:`calrl.trainers.ppo_compile`) and trl 1.12 with
``torch_compile=True`` to each round, their phases and ratios, and each run's warm-up overhead (the untimed updates
minus as many timed ones: the compile time). The runs, sides and report are ``bench_ppo_update``'s.

Part ``share`` (calrl only, in this process): the time spent inside ``CalibratedPPOTrainer.compute_rewards``
as a share of the update, for PPO-C (``ppo_c_variant: threshold``, ``correctness_mode: off``) and for vanilla
PPO (``ppo_c_variant: none``: the reward model alone), at two sizes: the tiny test LM (2 layers, hidden 64)
and 12 layers (hidden 256), policy, reward and value model alike. The policy is scripted to answer
"4 confidence: D" (D in 2, 5, 8), the worst case for the pipeline: every response states a confidence, so
every one is decoded, stripped and re-tokenised before the reward model reads it.

Usage::

    .venv/bin/python scripts/bench_ppo.py --trl-without-gc  # both parts (make bench-ppo), ~10 min on 2 cores
    .venv/bin/python scripts/bench_ppo.py --parts update --setup tiny  # the parity setup's sizes
    .venv/bin/python scripts/bench_ppo.py --quick         # smoke run (seconds)
    .venv/bin/python scripts/bench_ppo.py --skip-trl      # no trl side (no ratio)
    .venv/bin/python scripts/bench_ppo.py --parts update --trl-without-gc --torch-compile --warmup 4  # compiled
    .venv/bin/python scripts/bench_ppo.py --device cuda --parts share --json out.json

calrl's side runs on ``--device`` (``auto``: CUDA when available); the trl venv's torch is CPU-only, so the
trl side and the ratio are measured only when calrl's side is on the CPU too. Progress goes to stderr, the
results to stdout (``key: value`` lines) and, with ``--json``, to a JSON file.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench_ppo_timers import phase_timer, step_timer, sync
from bench_ppo_update import RESULT_PREFIX, log, median, part_update, report_update

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PARITY = HERE / "ppo_parity"
TRL_PYTHON = PARITY / ".venv" / "bin" / "python"

QUESTIONS = ["what is 2 + 2 ?", "what is 3 + 1 ?", "what is 1 + 4 ?", "what is 2 + 3 ?",
             "what is 0 + 4 ?", "what is 1 + 1 ?", "what is 4 + 0 ?", "what is 6 - 2 ?"]
DIGITS = ("2", "5", "8")
SIZES = {"tiny": {"num_layers": 2, "hidden_size": 64}, "12-layer": {"num_layers": 12, "hidden_size": 256}}
VARIANTS = ("threshold", "none")  # PPO-C pipeline, vanilla PPO (reward model only)


# ------------------------------------------------------------------------------------------- workers
def worker_trl(warmup: int, steps: int, setup: str, no_gc: bool = False, torch_compile: bool = False) -> dict:
    """trl 1.12.0's PPOTrainer on a tiny_setup setup (runs in scripts/ppo_parity/.venv).

    ``no_gc``: a diagnostic variant where the ``gc.collect()`` calls of trl's PPO loop (two per update) do
    nothing, to show how much of trl's update time they take; nothing else is changed.
    ``torch_compile``: ``PPOConfig(torch_compile=True)``, whatever trl 1.12's trainer does with it (its Trainer's
    accelerator compiles the prepared policy-and-value wrapper).
    """
    sys.path.insert(0, str(PARITY))
    import types

    import record_trl112
    import tiny_setup
    import torch
    import trl
    from trl.experimental.ppo import ppo_trainer

    if no_gc:
        ppo_trainer.gc = types.SimpleNamespace(collect=lambda *a, **k: 0)

    hp = tiny_setup.setup_hparams(setup)
    batch = hp["per_device_train_batch_size"] * hp["gradient_accumulation_steps"]
    with tempfile.TemporaryDirectory() as tmp:  # make_trainer sets torch.set_num_threads(1)
        extra = {"torch_compile": True} if torch_compile else {}
        trainer = record_trl112.make_trainer((warmup + steps) * batch, tmp, setup=setup, **extra)
        timer = step_timer("cpu")
        trainer.add_callback(timer)
        trainer.train()
    notes = [n for n, on in (("gc.collect off", no_gc), ("torch_compile", torch_compile)) if on]
    return {"impl": f"trl-{trl.__version__}" + (f" ({', '.join(notes)})" if notes else ""), "device": "cpu",
            "wall": timer.durations(0), "cpu": timer.durations(1), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def worker_calrl(warmup: int, steps: int, device: str, setup: str, torch_compile: bool = False) -> dict:
    """calrl's CalibratedPPOTrainer on the same setup and hyperparameters, its phases timed (phase_timer);
    ``torch_compile``: with ``torch_compile: true`` (calrl.trainers.ppo_compile)."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.path.insert(0, str(PARITY))
    import dataclasses

    import tiny_setup
    import torch
    from transformers import PrinterCallback, set_seed
    from transformers.utils import logging as hf_logging

    import calrl
    from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer

    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    hp = tiny_setup.setup_hparams(setup)
    set_seed(hp["seed"])
    parts = tiny_setup.build_all(setup)
    known = {f.name for f in dataclasses.fields(CalibratedPPOConfig)}
    settings = {k: v for k, v in hp.items() if k in known}
    settings["max_grad_norm"] = 0.0  # trl 1.12's PPO loop never clips gradients: do the same work
    batch = hp["per_device_train_batch_size"] * hp["gradient_accumulation_steps"]
    with tempfile.TemporaryDirectory() as tmp:
        args = CalibratedPPOConfig(output_dir=tmp, use_cpu=device == "cpu", report_to="none", save_strategy="no",
                                   logging_strategy="no", disable_tqdm=True, num_sample_generations=0,
                                   total_episodes=(warmup + steps) * batch, bf16=False, fp16=False,
                                   torch_compile=torch_compile, **settings)
        trainer = CalibratedPPOTrainer(args, parts["tokenizer"], parts["policy"], parts["ref_policy"],
                                       parts["reward_model"], parts["train_dataset"], parts["value_model"])
        trainer.remove_callback(PrinterCallback)  # no console dict at the end of train()
        timer = step_timer(device)
        phases = phase_timer(trainer, device)
        trainer.add_callback(timer)
        trainer.add_callback(phases)
        trainer.train()
    return {"impl": f"calrl-{calrl.__version__}" + (" (torch_compile)" if torch_compile else ""),
            "device": str(trainer.accelerator.device),
            "wall": timer.durations(0), "cpu": timer.durations(1), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "phases": phases.per_update}


def _scripted_confidence_lm(tok, num_layers: int, hidden_size: int, seed: int = 0):
    """A policy answering "4 confidence: D" (D drawn from 2, 5, 8) then EOS, at the given depth and width.

    ``calrl.tiny.models.build_scripted_causal_lm`` at that size (attention and MLP outputs zero, so the current
    token's embedding alone picks the next), so the forward and backward passes do the full work of the size.
    """
    from calrl.tiny.models import build_scripted_causal_lm

    chain = [("<|assistant|>", ["4"]), ("4", ["confidence"]), ("confidence", [":"]), (":", list(DIGITS)),
             *[(d, [tok.eos_token]) for d in DIGITS]]
    return build_scripted_causal_lm(tok, chain, seed=seed, num_layers=num_layers, hidden_size=hidden_size)


def run_share(size: str, variant: str, warmup: int, steps: int, device: str, out: Path) -> dict:
    """One calrl PPO run timing compute_rewards inside each update (in this process)."""
    sys.path.insert(0, str(PARITY))
    import tiny_setup
    from datasets import Dataset
    from transformers import PrinterCallback

    from calrl.tiny.models import build_tiny_reward_model, build_word_tokenizer
    from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer

    dims = SIZES[size]
    hp = tiny_setup.PPO_HPARAMS
    tok = build_word_tokenizer(QUESTIONS)
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS]})
    batch = len(QUESTIONS)
    args = CalibratedPPOConfig(
        output_dir=str(out / f"{size}-{variant}"), use_cpu=device == "cpu", report_to="none", seed=hp["seed"],
        save_strategy="no", logging_strategy="no", disable_tqdm=True, num_sample_generations=0,
        total_episodes=(warmup + steps) * batch, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_mini_batches=1, num_ppo_epochs=hp["num_ppo_epochs"], response_length=hp["response_length"],
        stop_token="eos", missing_eos_penalty=hp["missing_eos_penalty"], temperature=hp["temperature"],
        kl_coef=hp["kl_coef"], learning_rate=1e-5, ppo_c_variant=variant, correctness_mode="off",
        bf16=False, fp16=False)
    trainer = CalibratedPPOTrainer(args, tok, _scripted_confidence_lm(tok, **dims), None,
                                   build_tiny_reward_model(tok, seed=2, **dims), data,
                                   build_tiny_reward_model(tok, seed=1, **dims))
    trainer.remove_callback(PrinterCallback)  # no console dict at the end of train()
    timer = step_timer(device)
    trainer.add_callback(timer)
    inside: list[tuple[float, float]] = []
    original = trainer.compute_rewards

    def timed_compute_rewards(*a, **k):
        sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return original(*a, **k)
        finally:
            sync(device)
            inside.append((time.perf_counter() - w0, time.process_time() - c0))

    trainer.compute_rewards = timed_compute_rewards
    gc.collect()
    trainer.train()
    wall, cpu = timer.durations(0)[warmup:], timer.durations(1)[warmup:]
    timed = inside[warmup:warmup + steps]
    assert len(wall) == len(timed) == steps, (len(wall), len(timed), steps)
    pipe = trainer.reward_pipeline
    return {"update_wall": wall, "update_cpu": cpu, "rewards_wall": [t[0] for t in timed],
            "rewards_cpu": [t[1] for t in timed],
            "parsable": 1.0 - pipe.missing_total / ((warmup + steps) * batch),
            "device": str(trainer.accelerator.device)}


# ------------------------------------------------------------------------------------------- driver
def part_share(args, device: str) -> dict:
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    parsable: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            results[size] = {v: {"update_wall": [], "update_cpu": [], "rewards_wall": [], "rewards_cpu": []}
                             for v in VARIANTS}
            for r in range(args.share_rounds):
                for variant in VARIANTS:  # interleaved
                    t0 = time.perf_counter()
                    res = run_share(size, variant, args.share_warmup, args.share_steps, device, Path(tmp))
                    for key in results[size][variant]:
                        results[size][variant][key] += res[key]
                    if variant == "threshold":
                        parsable[size] = res["parsable"]
                    log(f"[share] {size} round {r + 1}/{args.share_rounds} {variant:9s}: "
                        f"rewards {median(res['rewards_wall']) * 1e3:7.2f} ms of "
                        f"{median(res['update_wall']) * 1e3:7.1f} ms/update ({time.perf_counter() - t0:.1f} s)")
    out: dict[str, dict] = {}
    for size, per_variant in results.items():
        row: dict[str, dict | float] = {"dims": SIZES[size], "parsable": parsable[size]}
        for variant, t in per_variant.items():
            row[variant] = {
                "share_wall": sum(t["rewards_wall"]) / sum(t["update_wall"]),
                "share_cpu": sum(t["rewards_cpu"]) / max(sum(t["update_cpu"]), 1e-12),
                "median_rewards_s": median(t["rewards_wall"]), "median_update_s": median(t["update_wall"]),
                "updates": len(t["update_wall"])}
        row["overhead_points_wall"] = 100 * (row["threshold"]["share_wall"] - row["none"]["share_wall"])
        row["overhead_points_cpu"] = 100 * (row["threshold"]["share_cpu"] - row["none"]["share_cpu"])
        out[size] = row
    return out


def _describe(setup: str) -> str:
    sys.path.insert(0, str(PARITY))
    import tiny_setup

    d, hp = tiny_setup.SETUPS[setup], tiny_setup.setup_hparams(setup)
    return (f"{d.num_layers}-layer Qwen2, hidden {d.hidden_size}, vocabulary {d.vocab_size}, batch "
            f"{hp['per_device_train_batch_size'] * hp['gradient_accumulation_steps']}, {hp['response_length']} "
            f"response tokens, {hp['num_ppo_epochs']} PPO epoch(s) x {hp['num_mini_batches']} mini-batch(es)")


def report(result: dict) -> None:
    env = result["env"]
    print(f"bench_ppo: device {env['device']}, torch {env['torch']}, threads {env['threads']}, "
          f"python {env['python']}, {env['machine']}")
    if result.get("update"):
        report_update(result["update"], _describe(result["update"]["setup"]))
    share = result.get("share")
    if share:
        print("pipeline share: time inside CalibratedPPOTrainer.compute_rewards / update time; scripted policy "
              "(every response states a confidence, so every one is stripped and re-tokenised)")
        for size, row in share.items():
            d = row["dims"]
            for variant, label in (("threshold", "ppo_c_threshold"), ("none", "vanilla_rm_only")):
                v = row[variant]
                print(f"share {size} {label}: {v['share_wall']:.2%} wall, {v['share_cpu']:.2%} cpu "
                      f"(rewards {v['median_rewards_s'] * 1e3:.2f} ms of {v['median_update_s'] * 1e3:.1f} ms/update, "
                      f"n={v['updates']}; {d['num_layers']} layers, hidden {d['hidden_size']})")
            print(f"share_overhead {size}: {row['overhead_points_wall']:+.2f} points wall, "
                  f"{row['overhead_points_cpu']:+.2f} points cpu (PPO-C pipeline minus RM only); "
                  f"confidence parsable in {row['parsable']:.0%} of PPO-C rollouts")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", choices=["both", "update", "share"], default="both")
    ap.add_argument("--setup", choices=["bigger", "tiny"], default="bigger",
                    help="update part: tiny_setup's models (bigger: 4 layers, 4k vocabulary, 32 response tokens; "
                         "tiny: the parity fixture's)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed updates per run, both sides (update part)")
    ap.add_argument("--steps", type=int, default=20, help="timed updates per run, both sides (update part)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of calrl/trl runs (update part)")
    ap.add_argument("--share-warmup", type=int, default=2)
    ap.add_argument("--share-steps", type=int, default=8)
    ap.add_argument("--share-rounds", type=int, default=2)
    ap.add_argument("--sizes", default="tiny,12-layer", help=f"share part: comma list of {', '.join(SIZES)}")
    ap.add_argument("--quick", action="store_true", help="smoke run: few updates, one round")
    ap.add_argument("--skip-trl", action="store_true", help="time calrl only (no trl venv needed, no ratio)")
    ap.add_argument("--device", default="auto", help="calrl's side: auto (cuda when available), cpu or cuda")
    ap.add_argument("--trl-without-gc", action="store_true",
                    help="also time trl with its per-update gc.collect() calls made no-ops (diagnostic)")
    ap.add_argument("--baseline", metavar="DIR", help="update part: also time calrl imported from another checkout "
                    "(its repository root), interleaved with this one's")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--torch-compile", action="store_true",
                    help="update part: also time calrl with torch_compile: true and trl 1.12 with torch_compile=True "
                         "(its gc.collect calls off with --trl-without-gc), their compile time reported apart")
    ap.add_argument("--worker", choices=["calrl", "calrl-compile", "trl", "trl-nogc", "trl-compile", "trl-nogc-compile"],
                    help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    if args.worker:  # a child process: one timed run, one result line
        compiled = args.worker.endswith("-compile")
        if args.worker.startswith("calrl"):
            res = worker_calrl(args.warmup, args.steps, args.device, args.setup, torch_compile=compiled)
        else:
            res = worker_trl(args.warmup, args.steps, args.setup, no_gc="nogc" in args.worker, torch_compile=compiled)
        print(RESULT_PREFIX + json.dumps(res), flush=True)
        return 0

    if args.quick:
        args.warmup, args.steps, args.rounds = 1, 3, 1
        args.share_warmup, args.share_steps, args.share_rounds = 1, 2, 1
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in args.sizes if s not in SIZES]
    if bad:
        print(f"bench_ppo: unknown size {bad[0]!r} (choose from {', '.join(SIZES)})", file=sys.stderr)
        return 2
    if args.baseline and not (Path(args.baseline) / "calrl" / "__init__.py").is_file():
        print(f"bench_ppo: --baseline {args.baseline}: no calrl package there (give a checkout's root)",
              file=sys.stderr)
        return 2
    if args.baseline:
        args.baseline = str(Path(args.baseline).resolve())
    if min(args.steps, args.rounds, args.share_steps, args.share_rounds) < 1 or min(args.warmup,
                                                                                     args.share_warmup) < 0:
        print("bench_ppo: --steps/--rounds must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        print(f"bench_ppo: device {args.device!r} is not available here (use auto, cpu or cuda)", file=sys.stderr)
        return 2
    run_update = args.parts in ("both", "update")
    with_trl = run_update and not args.skip_trl and device == "cpu"
    if with_trl and not TRL_PYTHON.exists():
        where = TRL_PYTHON.relative_to(REPO) if TRL_PYTHON.is_relative_to(REPO) else TRL_PYTHON
        print(f"bench_ppo: trl 1.12's venv is missing ({where}): run "
              f"'bash scripts/ppo_parity/setup_venv.sh' first, or pass --skip-trl", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    env = {"device": device + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
           "machine": platform.machine()}
    log(f"bench_ppo: calrl on {env['device']}; parts: {args.parts}"
        + ("" if with_trl or not run_update else " (trl side skipped)"))
    result: dict = {"env": env}
    if run_update:
        result["update"] = part_update(args, device, with_trl, TRL_PYTHON, REPO)
        if not with_trl:
            result["update"]["trl_skipped"] = ("--skip-trl" if args.skip_trl else
                                               f"trl's venv has a CPU torch; calrl ran on {device}")
    if args.parts in ("both", "share"):
        result["share"] = part_share(args, device)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
