"""``max_step_kl``: each optimiser step is checked against the policy before it, halved while above the bound,
undone after ``step_backtracks`` halvings; without the key nothing changes (trl 1.12's step)."""

import pytest
import torch
from ppo_arithmetic import arithmetic_trainer

from calrl.errors import ConfigError
from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer


class Recording(CalibratedPPOTrainer):
    """Keeps every step check and, after each, the step KL measured again from scratch."""

    def _bounded_step(self, rollout, trained):
        check = super()._bounded_step(rollout, trained)
        again = self._step_kl(rollout, trained) if self.args.max_step_kl is not None else None
        self.checks = [*getattr(self, "checks", []), (check, again)]
        return check


def make_trainer(tmp_path, name="out", **kwargs):
    return arithmetic_trainer(tmp_path / name, Recording, **{"max_steps": 3, "learning_rate": 3e-2,
                                                              "lr_scheduler_type": "constant", "max_grad_norm": 0.0,
                                                              **kwargs})


def weights(trainer):
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def test_a_bound_never_reached_changes_nothing(tmp_path):
    free = make_trainer(tmp_path, "free")
    free.train()
    loose = make_trainer(tmp_path, "loose", max_step_kl=1e9)
    loose.train()
    for name, value in weights(free).items():
        assert torch.equal(value, weights(loose)[name]), name  # the check's forward draws no random number
    assert all(check.halvings == 0 and check.kl == check.raw_kl > 0 for check, _ in loose.checks)
    logged = [row for row in loose.state.log_history if "policy/step_kl_avg" in row]
    assert len(logged) == 3 and all(row["policy/step_halvings_avg"] == 0 for row in logged)
    assert not any("policy/step_kl_avg" in row for row in free.state.log_history)  # trl 1.12's metric names


def test_steps_above_the_bound_are_halved_to_it(tmp_path):
    raw = make_trainer(tmp_path, "raw", max_step_kl=1e9)
    raw.train()
    bound = sorted(check.raw_kl for check, _ in raw.checks)[len(raw.checks) // 2]  # half the steps go over
    bounded = make_trainer(tmp_path, "bounded", max_step_kl=bound, step_backtracks=30)
    bounded.train()
    checks = bounded.checks
    assert len(checks) == 3 * 2 * 2
    assert any(check.halvings > 0 for check, _ in checks)
    for check, again in checks:
        assert check.kl <= bound and again == pytest.approx(check.kl, rel=1e-5, abs=1e-9)
        assert (check.halvings > 0) == (check.raw_kl > bound)


def test_a_step_over_the_bound_after_every_halving_is_undone(tmp_path):
    trainer = make_trainer(tmp_path, max_step_kl=1e-30, step_backtracks=1)
    start = weights(trainer)
    trainer.train()
    assert all(check.halvings == 2 and check.kl == 0.0 and check.raw_kl > 0 for check, _ in trainer.checks)
    for name, value in weights(trainer).items():
        assert torch.equal(value, start[name]), name  # every parameter back where it was, bit for bit
    assert trainer.state.log_history[0]["policy/step_halvings_avg"] == 2.0


@pytest.mark.parametrize("settings,match", [({"max_step_kl": 0.0}, "max_step_kl"),
                                            ({"max_step_kl": -1.0}, "max_step_kl"),
                                            ({"max_step_kl": 0.1, "step_backtracks": -1}, "step_backtracks"),
                                            ({"max_step_kl": 0.1, "deepspeed": {"zero_optimization": {}}},
                                             "DeepSpeed")])
def test_the_keys_are_checked(tmp_path, settings, match):
    with pytest.raises(ConfigError, match=match):
        CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **settings)
