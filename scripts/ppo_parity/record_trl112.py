"""Record a PPO numerical-parity fixture from trl 1.12.0's `trl.experimental.ppo.PPOTrainer`.

Runs in scripts/ppo_parity/.venv (made by setup_venv.sh); does not import calrl.

    scripts/ppo_parity/.venv/bin/python scripts/ppo_parity/record_trl112.py \
        [--out tests/fixtures/ppo_parity_trl112.json]

How the internals are captured: trl's `train()` is one monolithic loop, so this harness replaces
the module-level helpers it looks up at call time in `trl.experimental.ppo.ppo_trainer`
(`batch_generation`, `selective_log_softmax`, `forward`, `get_reward`, `truncate_response`)
with wrappers that call the originals unchanged and keep copies of their outputs; at the
training forward and at `trainer.log` the wrappers also read the rollout tensors and the
per-micro-batch stats from the `train()` frame's locals. Nothing trl computes is altered.

Before writing, the fixture (as parsed back from its JSON text) is checked for
self-consistency: every derived tensor and every logged number is recomputed from the raw
captured tensors with independent formulas and compared (exact for masks/ints, 1e-6 for floats).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import transformers
import trl
from transformers import set_seed
from transformers.trainer_callback import PrinterCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer
from trl.experimental.ppo import ppo_trainer as ppo_mod

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tiny_setup

REPO = HERE.parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "ppo_parity_trl112.json"
INVALID_LOGPROB = 1.0
METRIC_KEYS = [
    "objective/kl",
    "objective/entropy",
    "objective/non_score_reward",
    "objective/rlhf_reward",
    "objective/scores",
    "policy/approxkl_avg",
    "policy/clipfrac_avg",
    "loss/policy_avg",
    "loss/value_avg",
    "val/clipfrac_avg",
    "policy/entropy_avg",
    "val/ratio",
    "val/ratio_var",
    "val/num_eos_tokens",
    "lr",
    "episode",
]
TOL = 1e-6


def ppo_config(total_episodes: int, output_dir: str, **overrides) -> PPOConfig:
    """trl 1.12 PPOConfig from tiny_setup.PPO_HPARAMS (`overrides` replace single fields)."""
    hp = {**tiny_setup.PPO_HPARAMS, **overrides}
    return PPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        seed=hp["seed"],
        per_device_train_batch_size=hp["per_device_train_batch_size"],
        gradient_accumulation_steps=hp["gradient_accumulation_steps"],
        num_mini_batches=hp["num_mini_batches"],
        num_ppo_epochs=hp["num_ppo_epochs"],
        local_rollout_forward_batch_size=hp["local_rollout_forward_batch_size"],
        response_length=hp["response_length"],
        stop_token=hp["stop_token"],
        missing_eos_penalty=hp["missing_eos_penalty"],
        temperature=hp["temperature"],
        kl_coef=hp["kl_coef"],
        kl_estimator=hp["kl_estimator"],
        whiten_rewards=hp["whiten_rewards"],
        gamma=hp["gamma"],
        lam=hp["lam"],
        cliprange=hp["cliprange"],
        cliprange_value=hp["cliprange_value"],
        vf_coef=hp["vf_coef"],
        learning_rate=hp["learning_rate"],
        lr_scheduler_type=hp["lr_scheduler_type"],
        optim=hp["optim"],
        weight_decay=hp["weight_decay"],
        adam_beta1=hp["adam_beta1"],
        adam_beta2=hp["adam_beta2"],
        adam_epsilon=hp["adam_epsilon"],
        total_episodes=total_episodes,
        num_sample_generations=0,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_strategy="no",
        bf16=False,
        fp16=False,
    )


def make_trainer(total_episodes: int, output_dir: str, setup: str = "tiny", **overrides) -> PPOTrainer:
    """Builds a setup (tiny_setup.SETUPS; the fixture's: "tiny") and trl 1.12's PPOTrainer; seeds everything
    (torch, numpy, random)."""
    torch.set_num_threads(1)
    set_seed(tiny_setup.PPO_HPARAMS["seed"])
    parts = tiny_setup.build_all(setup)
    trainer = PPOTrainer(
        args=ppo_config(total_episodes, output_dir, **{**tiny_setup.SETUP_HPARAMS[setup], **overrides}),
        processing_class=parts["tokenizer"],
        model=parts["policy"],
        ref_model=parts["ref_policy"],
        reward_model=parts["reward_model"],
        train_dataset=parts["train_dataset"],
        value_model=parts["value_model"],
    )
    # np.random.permutation (mini-batch shuffling) uses numpy's global RNG, which trl never seeds.
    np.random.seed(tiny_setup.PPO_HPARAMS["seed"])
    trainer.remove_callback(PrinterCallback)  # no per-update console dicts
    return trainer


def _c(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def _train_frame():
    f = sys._getframe(2)
    while f is not None and f.f_code.co_name != "train":
        f = f.f_back
    assert f is not None, "could not find PPOTrainer.train frame"
    return f


class Recorder:
    """Wraps trl's module-level PPO helpers; the originals are always called unchanged."""

    def __init__(self, trainer: PPOTrainer, full: bool):
        self.trainer = trainer
        self.full = full
        self.steps: list[dict] = []
        self.metrics: list[dict] = []
        self._orig = {}

    # ---- wrappers --------------------------------------------------------------------------
    def _batch_generation(self, model, queries, *args, **kwargs):
        qr, logitss = self._orig["batch_generation"](model, queries, *args, **kwargs)
        if self.full:
            self.steps.append(
                {
                    "context_length": int(queries.shape[1]),
                    "_query_responses": _c(qr),
                    "_slsm": [],
                    "_micro": [],
                }
            )
        return qr, logitss

    def _selective_log_softmax(self, logits, index):
        out = self._orig["selective_log_softmax"](logits, index)
        if self.full:
            self.steps[-1]["_slsm"].append(_c(out))
        return out

    def _get_reward(self, model, query_responses, pad_token_id, context_length):
        out = self._orig["get_reward"](model, query_responses, pad_token_id, context_length)
        if self.full:
            step = self.steps[-1]
            if model is self.trainer.reward_model:
                step["_scores_raw"] = _c(out[1])
            else:
                step["_values_raw"] = _c(out[0][:, context_length - 1 : -1].squeeze(-1))
        return out

    def _truncate_response(self, stop_token_id, pad_token_id, responses):
        out = self._orig["truncate_response"](stop_token_id, pad_token_id, responses)
        if self.full:
            self.steps[-1]["_truncated"] = _c(out)
        return out

    def _forward(self, model, query_responses, pad_token_id):
        out = self._orig["forward"](model, query_responses, pad_token_id)
        if self.full and isinstance(out, tuple):  # the training forward (policy + value wrapper)
            step = self.steps[-1]
            loc = _train_frame().f_locals
            ctx = step["context_length"]
            assert loc["context_length"] == ctx
            if "_rollout" not in step:
                step["_rollout"] = {
                    k: _c(loc[k])
                    for k in [
                        "query_responses",
                        "responses",
                        "postprocessed_responses",
                        "logprobs",
                        "ref_logprobs",
                        "values",
                        "scores",
                        "sequence_lengths",
                        "padding_mask",
                        "padding_mask_p1",
                        "kl",
                        "non_score_reward",
                        "rewards",
                        "advantages",
                        "returns",
                    ]
                }
            step["_micro"].append(
                {
                    "indices": [int(i) for i in loc["micro_batch_inds"]],
                    "_vpred_raw": _c(out[1][:, ctx - 1 : -1].squeeze(-1)),
                    "_slsm_index": len(step["_slsm"]),  # the next selective_log_softmax call
                }
            )
        return out

    def _log(self, logs, *args, **kwargs):
        # val/ratio_var is the unbiased variance over the micro-batch stats: NaN (stored as null)
        # when an update has a single micro-batch.
        metrics = {
            k: (None if isinstance(logs[k], float) and math.isnan(logs[k]) else logs[k]) for k in METRIC_KEYS
        }
        self.metrics.append(metrics)
        if self.full:
            step = self.steps[-1]
            step["metrics"] = metrics
            loc = _train_frame().f_locals
            step["_stats"] = {
                k: _c(loc[k])
                for k in [
                    "approxkl_stats",
                    "pg_clipfrac_stats",
                    "pg_loss_stats",
                    "vf_loss_stats",
                    "vf_clipfrac_stats",
                    "entropy_stats",
                    "ratio_stats",
                ]
            }
        return self._orig["log"](logs, *args, **kwargs)

    # ---- install / run ---------------------------------------------------------------------
    def __enter__(self):
        for name in [
            "batch_generation",
            "selective_log_softmax",
            "get_reward",
            "truncate_response",
            "forward",
        ]:
            self._orig[name] = getattr(ppo_mod, name)
            setattr(ppo_mod, name, getattr(self, "_" + name))
        self._orig["log"] = self.trainer.log
        self.trainer.log = self._log
        return self

    def __exit__(self, *exc):
        for name, fn in self._orig.items():
            if name == "log":
                del self.trainer.log
            else:
                setattr(ppo_mod, name, fn)
        return False

    # ---- assemble the fixture's step records -------------------------------------------------
    def step_records(self) -> list[dict]:
        out = []
        for step in self.steps:
            r = step["_rollout"]
            slsm = step["_slsm"]
            assert len(slsm) == 2 + len(step["_micro"]), len(slsm)
            assert torch.equal(step["_query_responses"], r["query_responses"])
            assert torch.equal(step["_truncated"], r["postprocessed_responses"])
            stats = step["_stats"]
            n_micro = len(step["_micro"])
            assert stats["pg_loss_stats"].numel() == n_micro
            micro = []
            for k, mb in enumerate(step["_micro"]):
                idx = np.unravel_index(k, stats["pg_loss_stats"].shape)
                micro.append(
                    {
                        "indices": mb["indices"],
                        "new_logprobs_raw": slsm[mb["_slsm_index"]].tolist(),
                        "vpred_raw": mb["_vpred_raw"].tolist(),
                        "pg_loss": stats["pg_loss_stats"][idx].item(),
                        "vf_loss": stats["vf_loss_stats"][idx].item(),
                        "pg_clipfrac": stats["pg_clipfrac_stats"][idx].item(),
                        "vf_clipfrac": stats["vf_clipfrac_stats"][idx].item(),
                        "approxkl": stats["approxkl_stats"][idx].item(),
                        "entropy_mean": stats["entropy_stats"][idx].item(),
                        "ratio_mean": stats["ratio_stats"][idx].item(),
                    }
                )
            out.append(
                {
                    "context_length": step["context_length"],
                    "query_responses": r["query_responses"].tolist(),
                    "responses": r["responses"].tolist(),
                    "postprocessed_responses": r["postprocessed_responses"].tolist(),
                    "logprobs_raw": slsm[0].tolist(),
                    "ref_logprobs_raw": slsm[1].tolist(),
                    "values_raw": step["_values_raw"].tolist(),
                    "scores_raw": step["_scores_raw"].tolist(),
                    "scores": r["scores"].tolist(),
                    "sequence_lengths": r["sequence_lengths"].tolist(),
                    "rewards": r["rewards"].tolist(),
                    "advantages": r["advantages"].tolist(),
                    "returns": r["returns"].tolist(),
                    "kl": r["kl"].tolist(),
                    "micro_batches": micro,
                    "metrics": step["metrics"],
                    # kept only for the in-recorder checks below, not written
                    "_check": {
                        k: r[k]
                        for k in [
                            "logprobs",
                            "ref_logprobs",
                            "values",
                            "padding_mask",
                            "padding_mask_p1",
                            "non_score_reward",
                        ]
                    },
                }
            )
        return out


# ---------------------------------------------------------------------------------------------
# Self-consistency checks: recompute from the fixture's raw tensors with our own formulas.
# ---------------------------------------------------------------------------------------------
def _t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def _close(name, got, want, tol=TOL):
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    err = (got - want).abs().max().item() if got.numel() else 0.0
    assert err <= tol, f"{name}: max abs err {err:.3g} > {tol}"
    return err


def _mmean(x, mask):
    return (x * mask).sum() / mask.sum()


def _whiten(x, mask):
    mean = _mmean(x, mask)
    var = _mmean((x - mean) ** 2, mask) * (mask.sum() / (mask.sum() - 1))
    return (x - mean) * torch.rsqrt(var + 1e-8)


def check_fixture(fx: dict, internal: list[dict] | None = None) -> float:
    """Asserts that every derived quantity in `fx` follows from its raw tensors. Returns max err."""
    cfg = fx["config"]
    pad, eos, stop = cfg["pad_token_id"], cfg["eos_token_id"], cfg["stop_token_id"]
    worst = 0.0
    for s_i, st in enumerate(fx["steps"]):
        ctx = st["context_length"]
        qr = _t(st["query_responses"], torch.long)
        resp = _t(st["responses"], torch.long)
        B, R = resp.shape
        assert torch.equal(qr[:, ctx:], resp)
        # truncation at the first stop token
        post = resp.clone()
        for b in range(B):
            hits = (resp[b] == stop).nonzero()
            if len(hits):
                post[b, hits[0, 0] + 1 :] = pad
        assert torch.equal(post, _t(st["postprocessed_responses"], torch.long))
        # sequence lengths: index of the first pad in the truncated response, minus 1
        seq = torch.tensor(
            [int((post[b] == pad).nonzero()[0, 0]) - 1 if (post[b] == pad).any() else R - 1 for b in range(B)]
        )
        assert torch.equal(seq, _t(st["sequence_lengths"], torch.long))
        idx = torch.arange(R).expand(B, R)
        pmask = idx > seq[:, None]
        pmask_p1 = idx > (seq + 1)[:, None]
        # scores and the missing-EOS penalty
        has_eos = (post == eos).any(1)
        scores = _t(st["scores_raw"]) - cfg["missing_eos_penalty"] * (~has_eos).float()
        worst = max(worst, _close(f"step{s_i}.scores", st["scores"], scores))
        # masked rollout tensors and the KL / reward
        lp = _t(st["logprobs_raw"]).masked_fill(pmask, INVALID_LOGPROB)
        ref = _t(st["ref_logprobs_raw"]).masked_fill(pmask, INVALID_LOGPROB)
        values = _t(st["values_raw"]).masked_fill(pmask_p1, 0.0)
        kl = lp - ref  # k1
        worst = max(worst, _close(f"step{s_i}.kl", st["kl"], kl))
        rewards = -cfg["kl_coef"] * kl
        end = torch.where(seq + 1 < R, seq + 1, seq)
        rewards[torch.arange(B), end] += _t(st["scores"])
        assert not cfg["whiten_rewards"]
        worst = max(worst, _close(f"step{s_i}.rewards", st["rewards"], rewards))
        # GAE (gamma, lam), returns, whitened + masked advantages
        adv = torch.zeros(B, R)
        last = torch.zeros(B)
        for t in reversed(range(R)):
            nxt = values[:, t + 1] if t < R - 1 else torch.zeros(B)
            delta = rewards[:, t] + cfg["gamma"] * nxt - values[:, t]
            last = delta + cfg["gamma"] * cfg["lam"] * last
            adv[:, t] = last
        returns = adv + values
        adv = _whiten(adv, (~pmask).float()).masked_fill(pmask, 0.0)
        worst = max(worst, _close(f"step{s_i}.returns", st["returns"], returns))
        worst = max(worst, _close(f"step{s_i}.advantages", st["advantages"], adv))
        if internal is not None:  # the tensors trl itself held in train()
            ic = internal[s_i]["_check"]
            assert torch.equal(ic["logprobs"], lp) and torch.equal(ic["ref_logprobs"], ref)
            assert torch.equal(ic["values"], values)
            assert torch.equal(ic["padding_mask"], pmask) and torch.equal(ic["padding_mask_p1"], pmask_p1)
        # per-micro-batch losses from the training-forward tensors
        adv_used = _t(st["advantages"])
        ret_used = _t(st["returns"])
        mb_stats = {
            k: []
            for k in [
                "pg_loss",
                "vf_loss",
                "pg_clipfrac",
                "vf_clipfrac",
                "approxkl",
                "ratio_mean",
                "entropy_mean",
            ]
        }
        for m_i, mb in enumerate(st["micro_batches"]):
            ix = torch.tensor(mb["indices"])
            pm, pm1 = pmask[ix], pmask_p1[ix]
            new_lp = _t(mb["new_logprobs_raw"]).masked_fill(pm, INVALID_LOGPROB)
            vpred = _t(mb["vpred_raw"]).masked_fill(pm1, 0.0)
            v_old = values[ix]
            vclip = torch.maximum(
                torch.minimum(vpred, v_old + cfg["cliprange_value"]), v_old - cfg["cliprange_value"]
            )
            l1 = (vpred - ret_used[ix]) ** 2
            l2 = (vclip - ret_used[ix]) ** 2
            vf_loss = 0.5 * _mmean(torch.maximum(l1, l2), (~pm1).float())
            vf_clipfrac = _mmean((l2 > l1).float(), (~pm1).float())
            diff = new_lp - lp[ix]
            ratio = diff.exp()
            a = adv_used[ix]
            p1 = -a * ratio
            p2 = -a * ratio.clamp(1 - cfg["cliprange"], 1 + cfg["cliprange"])
            pg_loss = _mmean(torch.maximum(p1, p2), (~pm).float())
            pg_clipfrac = _mmean((p2 > p1).float(), (~pm).float())
            approxkl = 0.5 * (diff**2).mean()
            tag = f"step{s_i}.mb{m_i}"
            for name, val in [
                ("pg_loss", pg_loss),
                ("vf_loss", vf_loss),
                ("pg_clipfrac", pg_clipfrac),
                ("vf_clipfrac", vf_clipfrac),
                ("approxkl", approxkl),
                ("ratio_mean", ratio.mean()),
            ]:
                worst = max(worst, _close(f"{tag}.{name}", mb[name], val))
            for k, seen in mb_stats.items():
                seen.append(mb[k])
        # the logged metrics follow from the captured tensors
        met = st["metrics"]
        nsr = -cfg["kl_coef"] * kl
        checks = {
            "objective/kl": kl.sum(1).mean(),
            "objective/entropy": ((-lp) * (~pmask).float()).sum(1).mean(),
            "objective/non_score_reward": nsr.sum(1).mean(),
            "objective/rlhf_reward": nsr.sum(1).mean() + _t(st["scores"]).mean(),
            "objective/scores": _t(st["scores"]).mean(),
            "loss/policy_avg": torch.tensor(mb_stats["pg_loss"]).mean(),
            "loss/value_avg": torch.tensor(mb_stats["vf_loss"]).mean(),
            "policy/clipfrac_avg": torch.tensor(mb_stats["pg_clipfrac"]).mean(),
            "val/clipfrac_avg": torch.tensor(mb_stats["vf_clipfrac"]).mean(),
            "policy/approxkl_avg": torch.tensor(mb_stats["approxkl"]).mean(),
            "policy/entropy_avg": torch.tensor(mb_stats["entropy_mean"]).mean(),
            "val/ratio": torch.tensor(mb_stats["ratio_mean"]).mean(),
        }
        for k, v in checks.items():
            worst = max(worst, _close(f"step{s_i}.metrics[{k}]", met[k], v))
        assert met["val/num_eos_tokens"] == int((resp == eos).sum())
        if len(mb_stats["ratio_mean"]) > 1:
            worst = max(
                worst,
                _close(
                    f"step{s_i}.metrics[val/ratio_var]",
                    met["val/ratio_var"],
                    torch.tensor(mb_stats["ratio_mean"]).var(),
                ),
            )
        else:
            assert met["val/ratio_var"] is None
        if len(st["micro_batches"]) == 1:
            assert met["loss/policy_avg"] == st["micro_batches"][0]["pg_loss"]
            assert met["loss/value_avg"] == st["micro_batches"][0]["vf_loss"]
    return worst


# ---------------------------------------------------------------------------------------------
def _fmt(obj, indent=0) -> str:
    """JSON with dicts indented and lists of scalars (and of scalar lists) kept on one line."""
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad} {json.dumps(k)}: {_fmt(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(x, dict) for x in obj):
        items = [pad + " " + _fmt(x, indent + 1) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)


def _check_floats(obj, path="$"):
    if isinstance(obj, float):
        assert math.isfinite(obj), path
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_floats(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_floats(v, f"{path}[{i}]")


def run_full(total_episodes: int, output_dir: str, **overrides) -> tuple[dict, list[dict]]:
    trainer = make_trainer(total_episodes, output_dir, **overrides)
    with Recorder(trainer, full=True) as rec:
        trainer.train()
    a, tok = trainer.args, trainer.processing_class
    config = {
        "kl_coef": a.kl_coef,
        "kl_estimator": a.kl_estimator,
        "gamma": a.gamma,
        "lam": a.lam,
        "cliprange": a.cliprange,
        "cliprange_value": a.cliprange_value,
        "vf_coef": a.vf_coef,
        "whiten_rewards": a.whiten_rewards,
        "missing_eos_penalty": a.missing_eos_penalty,
        "temperature": a.temperature,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "stop_token_id": trainer.stop_token_id,
        "per_device_train_batch_size": a.per_device_train_batch_size,
        "gradient_accumulation_steps": a.gradient_accumulation_steps,
        "num_mini_batches": a.num_mini_batches,
        "num_ppo_epochs": a.num_ppo_epochs,
        "response_length": a.response_length,
        "learning_rate": a.learning_rate,
        "lr_scheduler_type": str(getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type)),
        "optim": str(getattr(a.optim, "value", a.optim)),
        "weight_decay": a.weight_decay,
        "adam_beta1": a.adam_beta1,
        "adam_beta2": a.adam_beta2,
        "adam_epsilon": a.adam_epsilon,
        "seed": a.seed,
        "total_episodes": a.total_episodes,
    }
    return config, rec.step_records()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    hp = tiny_setup.PPO_HPARAMS
    assert trl.__version__ == "1.12.0", trl.__version__

    with tempfile.TemporaryDirectory() as tmp:
        # 1) the fixture run: every internal of each update
        config, steps = run_full(hp["fixture_total_episodes"], tmp)
        # 2) a variant with several PPO epochs and mini-batches (ratio != 1, clipping acts)
        var_over = {
            "num_ppo_epochs": hp["variant_num_ppo_epochs"],
            "num_mini_batches": hp["variant_num_mini_batches"],
        }
        var_config, var_steps = run_full(hp["variant_total_episodes"], tmp, **var_over)
        # 3) the long run: logged metrics only
        trainer = make_trainer(hp["long_run_total_episodes"], tmp)
        with Recorder(trainer, full=False) as rec_long:
            trainer.train()
        long_metrics = rec_long.metrics
        del trainer

    def public(steps_):
        return [{k: v for k, v in s.items() if not k.startswith("_")} for s in steps_]

    fixture = {
        "source": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "script": "scripts/ppo_parity/record_trl112.py",
            "setup": "scripts/ppo_parity/tiny_setup.py",
        },
        "config": config,
        "steps": public(steps),
        "long_run": {"updates": len(long_metrics), "metrics": long_metrics},
        "variants": {
            "epochs4_minibatches2": {
                "description": "same setup and seeds, num_ppo_epochs=4, num_mini_batches=2: 8 micro-batches "
                "of 2 per update, in trl's order (epoch-major); metrics average over them",
                "config": var_config,
                "steps": public(var_steps),
            }
        },
    }
    _check_floats(fixture)
    text = _fmt(fixture) + "\n"

    # Self-consistency on the fixture exactly as a test will read it.
    parsed = json.loads(text)
    worst = check_fixture(parsed, internal=steps)
    var = parsed["variants"]["epochs4_minibatches2"]
    worst = max(worst, check_fixture(var, internal=var_steps))
    # The long run starts exactly as the fixture run (same seeds, data order, constant lr).
    for a, b in zip(parsed["steps"], parsed["long_run"]["metrics"]):
        assert a["metrics"] == b, (a["metrics"], b)
    # ... and the variant's first rollout is the fixture's first rollout.
    for k in ["query_responses", "logprobs_raw", "values_raw", "scores", "advantages", "returns"]:
        assert var["steps"][0][k] == parsed["steps"][0][k], k

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    lm = long_metrics
    q = max(1, len(lm) // 4)
    first = sum(m["objective/scores"] for m in lm[:q]) / q
    last = sum(m["objective/scores"] for m in lm[-q:]) / q
    print(
        json.dumps(
            {
                "out": str(out),
                "bytes": len(text.encode()),
                "updates": len(parsed["steps"]),
                "max_abs_err_recomputed": worst,
                "long_run_updates": len(lm),
                "long_run_scores_first_quarter": first,
                "long_run_scores_last_quarter": last,
                "long_run_kl_max": max(m["objective/kl"] for m in lm),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
