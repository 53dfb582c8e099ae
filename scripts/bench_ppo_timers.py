"""Timers of scripts/bench_ppo.py: update boundaries (both sides) and calrl's phases within an update.

Imported by the benchmark's workers in either virtual environment (calrl's, or scripts/ppo_parity/.venv for trl's);
imports only ``time`` here and ``transformers`` (and, for calrl's phases, calrl) when a timer is made.
"""

from __future__ import annotations

import time


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def step_timer(device: str):
    """A TrainerCallback keeping (wall, process CPU) marks at on_train_begin and every on_step_end."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []

        def _mark(self) -> None:
            sync(device)
            self.marks.append((time.perf_counter(), time.process_time()))

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks = []
            self._mark()

        def on_step_end(self, args, state, control, **kwargs):
            self._mark()

        def durations(self, kind: int) -> list[float]:
            return [b[kind] - a[kind] for a, b in zip(self.marks, self.marks[1:])]

    return StepTimer()


#: calrl's phases of an update (phase_timer); "other" is the rest (GAE, masks, metrics, callbacks)
PHASES = ("generation", "reference forward", "rollout value forward", "rewards", "training forward", "backward",
          "optimiser step", "other")


def phase_timer(trainer, device: str):
    """A TrainerCallback timing calrl's phases of each update (wall and process CPU seconds: ``per_update`` holds one
    ``{"wall": {phase: s}, "cpu": {phase: s}}`` per update), by wrapping what runs them.

    generation: ``calrl.trainers.ppo.sample_responses``; reference forward: ``trainer._reference_logprobs``; rollout
    value forward and training forward: the policy-and-value module's ``forward`` (``what="values"`` / ``"both"``);
    rewards: ``trainer.compute_rewards``; backward: ``accelerator.backward``; optimiser step: the optimiser's
    ``step`` and ``zero_grad``. Only the outermost timed call counts (no phase is counted twice). The module's
    forward and the optimiser are wrapped at ``on_train_begin``, once the trainer has prepared them.
    """
    from transformers import TrainerCallback

    import calrl.trainers.ppo as ppo_module

    class _PhaseTimer(TrainerCallback):
        def __init__(self) -> None:
            self.per_update: list[dict[str, dict[str, float]]] = []
            self.current: dict[str, dict[str, float]] = {}
            self.depth, self.start = 0, (0.0, 0.0)
            self._wrap(ppo_module, "sample_responses", lambda *a, **k: "generation")
            self._wrap(trainer, "_reference_logprobs", lambda *a, **k: "reference forward")
            self._wrap(trainer, "compute_rewards", lambda *a, **k: "rewards")
            self._wrap(trainer.accelerator, "backward", lambda *a, **k: "backward")

        def _wrap(self, owner, name: str, phase_of) -> None:
            original = getattr(owner, name)

            def timed(*a, **k):
                if self.depth:
                    return original(*a, **k)
                self.depth += 1
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    return original(*a, **k)
                finally:
                    sync(device)
                    phase = phase_of(*a, **k)
                    self.current["wall"][phase] += time.perf_counter() - t0
                    self.current["cpu"][phase] += time.process_time() - c0
                    self.depth -= 1

            setattr(owner, name, timed)

        def on_train_begin(self, args, state, control, **kwargs):
            for name in ("step", "zero_grad"):  # the optimiser exists (and is prepared) by now
                self._wrap(trainer.optimizer, name, lambda *a, **k: "optimiser step")
            # the prepared module's forward (under torch_compile: the compiled module's, so the timer stays outside
            # the compiled region)
            self._wrap(trainer.model, "forward", lambda *a, **k: "rollout value forward" if (
                k.get("what", a[2] if len(a) > 2 else "both") == "values") else "training forward")

        def on_step_begin(self, args, state, control, **kwargs):
            self.current = {"wall": dict.fromkeys(PHASES, 0.0), "cpu": dict.fromkeys(PHASES, 0.0)}
            sync(device)
            self.start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            for kind, now in (("wall", time.perf_counter()), ("cpu", time.process_time())):
                spent = self.current[kind]
                spent["other"] = now - self.start[kind == "cpu"] - sum(spent.values())
            self.per_update.append(self.current)

    return _PhaseTimer()
