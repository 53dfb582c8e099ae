"""The recipes of the study: YAML files of calrl's recipe schema (``calrl/runners/recipe.py``), one per run.

The demo writes them and runs them with ``calrl train-rm``, ``calrl train-ppo`` and ``calrl train-grpo``,
exactly as a user would run the recipes in ``configs/`` on a real model. Every policy gets the same prompts,
the same number of epochs over them and the same seed; only the method differs:

=============================  ========================================================================
policy                         what differs
=============================  ========================================================================
``ppo``                        vanilla PPO, ordinary reward model (scores the response with its confidence)
``ppo_m``                      vanilla PPO with the calibrated reward model (PPO-M)
``ppo_c``                      PPO-C (difference): ordinary RM on the response without its confidence,
                               adjusted by the stated confidence
``ppo_v``                      vanilla PPO with the rule-based correctness reward (1 right, 0 wrong) added
                               to the reward model's score (the verifiable-reward table's baseline)
``ppo_c_abstain``              PPO-C with abstention as a rewarded outcome, on the verifiable reward only
                               (correct 1, wrong 0, "I don't know" ``abstention_reward``), as
                               ``configs/ppo_c_abstention.yaml`` does for GSM8K
``grpo_brier``                 GRPO with the RLCR reward (correctness + Brier on the stated confidence)
=============================  ========================================================================

The main comparison (``MAIN_POLICIES``) is the reward model alone: the reward models learn right from wrong
from the raters' fact checks (first the answers alone, ``rm_base``, then with stated confidences among the
other comparisons), so nothing else is needed to track correctness. The
verifiable-reward policies (``VERIFIABLE_POLICIES``) form the second table. Every PPO variant penalises a
response without a parsable confidence (``missing_confidence_penalty``): otherwise a policy escapes whatever
its stated confidence costs it (PPO-C's adjustment, the calibrated RM's doubt) by stating none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from calrl.io import write_text
from calrl.rewards.terms import terms_from_flat_keys

MAIN_POLICIES = ("sft", "ppo", "ppo_m", "ppo_c")  # the reward model alone
# + rule-based correctness. PPO-M and PPO-C with the correctness reward added were dropped to fit the time
# budget (they made a quarter of the work and, in the runs before, neither differed from PPO + correctness)
VERIFIABLE_POLICIES = ("ppo_v", "ppo_c_abstain", "grpo_brier")
POLICIES = (*MAIN_POLICIES, *VERIFIABLE_POLICIES)
# what `calrl demo` runs by default: every policy, PPO-C + abstention included (issue 19: the abstention policy
# belongs to the main study, judged per seed on where it abstains and beside the others on the all-items
# risk-coverage view). It adds 5 PPO runs to the full study's time; the quick study (`MAIN_POLICIES`) leaves it out
FULL_POLICIES = POLICIES
RL_POLICIES = POLICIES[1:]
ECE_COMPARISONS = (("ppo_m", "ppo"), ("ppo_c", "ppo"))  # (method, baseline) of the per-seed ECE claims


def ece_check(policy: str, base: str) -> str:
    """The key in ``summary.json``'s checks of "``policy``'s ECE at least 30% below ``base``'s"."""
    return f"{policy}_lower_ece_than_{base}"


def accuracy_check(policy: str, base: str) -> str:
    """The key in ``summary.json``'s checks of "``policy``'s accuracy at most 2 points below ``base``'s"."""
    return f"{policy}_accuracy_not_worse_than_{base}"


ABSTENTION_REFERENCE = "ppo_v"  # what PPO-C + abstention's abstentions are judged against (same seed, no abstention)
METHOD_NAMES = {
    "sft": "SFT (no RL)",
    "ppo": "PPO",
    "ppo_m": "PPO-M",
    "ppo_c": "PPO-C",
    "ppo_v": "PPO + correctness",
    "ppo_c_abstain": "PPO-C + abstention",
    "grpo_brier": "GRPO + Brier",
}
REWARD_MODELS = ("rm_plain", "rm_calibrated")
RM_BASE = "rm_base"  # the raters' fact checks, from the SFT policy: both reward models start from it


def reward_model_of(policy: str) -> str:
    """The reward model a PPO policy is trained against (GRPO + Brier uses none)."""
    return "rm_calibrated" if policy == "ppo_m" else "rm_plain"
WANDB_PROJECT = "calrl-demo"


@dataclass
class RewardModelSettings:
    batch_size: int = 32
    # rm_base: the raters' fact checks, answers alone (no confidence statement, no bias)
    base_epochs: float = 4.0
    base_learning_rate: float = 1e-3
    base_pairs: int = 4000
    # rm_plain, the ordinary RM: all the raters' comparisons (fact checks with stated confidences and the
    # biased pairs), from rm_base
    epochs: float = 4.0
    learning_rate: float = 1e-3
    preference_pairs: int = 4000
    # rm_calibrated (PPO-M): rm_plain fine-tuned, as the published script does, on the stronger half of the
    # comparisons by preference strength (calrl data filter-preferences); with calrl's combined loss (the
    # preference term plus lambda times the two calibration terms), not the script's calibration terms alone:
    # with those alone the fine-tuned RM lost right from wrong (held-out accuracy 0.88 -> 0.52, seed 0)
    keep_fraction: float = 0.5
    calibrated_epochs: float = 2.0
    calibrated_learning_rate: float = 5e-4
    calibration_lambda: float = 3.0
    # the calibration terms order two different confidences drawn from 0-10 (calrl's "ordered" pairing), not a
    # value from 7-10 against one from 0-3 (the reference's "ranges"): the reference's pairs leave the reward flat
    # inside 7-10, and PPO-M's policy let its stated confidence on the well-known people drift from 0.95 to
    # 0.77-0.84 in 2 of 5 seeds (ECE above PPO's there); with "ordered" it stays at 0.90-1.00 (docs/history/demo_findings.md)
    calibration_pairing: str = "ordered"


@dataclass
class PPOSettings:
    # 6 passes over the 256 RL prompts (60 updates), not 3: vanilla PPO's climb up the confidence scale is a slow
    # drift that 30 updates stopped early in some RL seeds (world 5: never-seen confidence 0.23-0.93 over 14 seeds
    # with 3 epochs, 0.45-0.96 with 6; PPO-M and PPO-C stayed calibrated). Affordable since share_prompt_prefix
    # (below) made a stage's training steps 2.5x cheaper (docs/history/demo_findings.md, sixteenth and seventeenth
    # versions)
    epochs: float = 6.0
    # 4.5e-4 with a 10% warmup: at 3e-4 PPO raised the never-seen people's stated confidence by only 0.12-0.23
    # (ECE +0.04-0.08, the per-seed comparisons then within noise); at 6e-4 without warmup the policy of one seed
    # in five dropped the confidence statement within 3 updates (KL 11-13 nats), and so did one at 6e-4 with the
    # warmup after the critic was read on the normalised scale
    learning_rate: float = 4.5e-4
    warmup: float = 0.1  # share of the updates the learning rate warms up over (``warmup_steps`` below 1)
    # 24 rollouts per update (10 whole batches of the 256 RL prompts per epoch), not 32: with 32 (and 3 epochs) PPO
    # hardly raised the never-seen people's confidence in one seed of five (0.13 -> 0.20, ECE below SFT's)
    batch_size: int = 24
    num_mini_batches: int = 2
    num_ppo_epochs: int = 2  # 4 in the first full run: 15 min 45 s for the study, over the 15-minute budget
    kl_coef: float = 0.05
    # Adam's second-moment decay, as the paper's PPO scripts set it (OpenRLHF's --adam_betas 0.9 0.95; transformers'
    # default is 0.999): with 0.999 the policy of seed 0 took one step whose approximate KL was 2.5 (200 times the
    # others), lost its confidence statements for good and never recovered (docs/history/demo_findings.md)
    adam_beta2: float = 0.95
    # each optimiser step bounded to an approximate KL of 0.02 on its mini-batch (halved until it is, calrl's
    # max_step_kl): ordinary steps measure 0.0003-0.007; under MKL_CBWR=AUTO RL seed 0's vanilla PPO and PPO-C took
    # one of 2.5 and 2.2 and lost their confidence statements for good (docs/history/demo_findings.md, ninth version)
    max_step_kl: float = 0.02
    # the reward model's score divided by its stored std (calrl train-rm writes it), as the paper's PPO-C scripts
    # do; without it the ordinary RM's scale (std about 8) made the KL penalty negligible, and PPO-C's policy
    # found an answer ("i.") the reward model scored high (KL 2-4 nats, half of the known facts lost)
    normalize_reward: bool = True
    response_length: int = 12
    # every prompt starts with calrl eval's elicitation instruction (96 of a row's 106 prompt tokens): read it once
    # per forward batch through the KV cache, not once per row (calrl's share_prompt_prefix; the same computation up
    # to float rounding). It made a PPO stage's training steps about 2.5x faster
    share_prompt_prefix: bool = True
    # PPO-C's w: 1 where the paper's PPO-C scripts use 0.5 (a departure, docs/demo.md step 5). At 0.5 the adjustment
    # w (r - avg)(c - 0.5) paid a right answer about 0.025 reward std per step of the confidence scale, too little to
    # hold a confidence at the top of it: the well-known people's fell to 0.77-0.88 in quick RL seeds 1 and 2 and
    # the ECE claim failed in full seeds 5 and 9. At 1 it held there; its one gross failure (never-seen confidence
    # 0.69 under MKL_CBWR=COMPATIBLE) was a format hack every reward now reads as missing
    # (calrl.confidence.text_between_statements; docs/history/demo_findings.md, thirteenth version)
    ppo_c_weight: float = 1.0
    # PPO-C + abstention keeps 0.5: its abstention reward (below) was balanced against the humble-guess bonus
    # w (avg - 0)(0.5 - c), which doubles with w
    abstain_ppo_c_weight: float = 0.5
    ppo_c_alpha: float = 0.1
    verifiable_correctness_mode: str = "add"  # the *_v policies: correctness reward (1 / 0) added to the RM score
    ppo_c_variant: str = "difference"
    missing_confidence_penalty: float = 1.0  # calrl's default (one reward std under normalize_reward)
    # ppo_c_abstain: "I don't know" pays 0.45, not 0.35: under PPO-C's difference variant a wrong answer stated
    # with low confidence also earns about +0.1 (w * (avg - 0) * (0.5 - c)), so at 0.35 abstaining beat a humble
    # guess by only about 0.25 and RL seed 2 stopped abstaining (0 of 60 never-seen people); at 0.45 every RL seed
    # 0-4 abstained on 62-72% of them and on none of the well-known (docs/history/demo_findings.md, ninth version)
    abstention_reward: float = 0.45


@dataclass
class GRPOSettings:
    epochs: float = 2.0
    learning_rate: float = 3e-4
    batch_size: int = 32
    num_generations: int = 4
    beta: float = 0.05


@dataclass
class EvalSettings:
    batch_size: int = 64
    max_new_tokens: int = 12
    bootstrap: int = 200
    gate_bootstrap: int = 200


@dataclass
class RecipeSettings:
    """Every knob of the runs the study launches (the full study's defaults; ``quick`` shrinks them)."""

    rm: RewardModelSettings = field(default_factory=RewardModelSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# TRL's configs (reward, GRPO, SFT) turn gradient checkpointing on by default; on the demo's 2-layer model on a CPU it
# saves no memory that matters and recomputes every forward: about 20% of each run, with the same weights to the bit
# (SFT checked with and without). The study's runs turn it off, calrl's PPO has it off by default.
GRADIENT_CHECKPOINTING = False


def _common(run_name: str, out_dir: Path, seed: int, tags: list[str]) -> dict[str, Any]:
    return {
        "wandb": {"project": WANDB_PROJECT, "run_name": run_name, "tags": ["demo", *tags], "mode": "offline",
                  "dir": str(out_dir)},
        "training": {"output_dir": str(out_dir), "use_cpu": True, "seed": seed, "report_to": "wandb",
                     "logging_steps": 1, "disable_tqdm": True, "save_strategy": "no", "bf16": False,
                     "gradient_checkpointing": GRADIENT_CHECKPOINTING},
    }


def reward_model_recipe(name: str, *, init_dir: Path, preferences_dir: Path, out_dir: Path, seed: int,
                        settings: RewardModelSettings) -> dict[str, Any]:
    """``rm_base`` (the raters' fact checks, answers alone, from the SFT policy with a seeded score head and the
    reward tokenizer: ``calrl.demo.sft.save_reward_init``); ``rm_plain``, the ordinary reward model (all the
    raters' comparisons, from ``rm_base``); or ``rm_calibrated`` (PPO-M: ``rm_plain`` fine-tuned with the
    calibration terms on the comparisons ``calrl data filter-preferences`` kept, :class:`RewardModelSettings`)."""
    calibrated = name == "rm_calibrated"
    is_base = name == RM_BASE
    epochs, lr = {RM_BASE: (settings.base_epochs, settings.base_learning_rate),
                  "rm_calibrated": (settings.calibrated_epochs, settings.calibrated_learning_rate)
                  }.get(name, (settings.epochs, settings.learning_rate))
    base = _common(f"seed{seed}-{name}", out_dir, seed,
                   ["rm", "base" if is_base else ("calibrated" if calibrated else "plain")])
    if calibrated:
        base["training"]["confidence_pairing"] = settings.calibration_pairing
    base["training"].update({
        "calibration_lambda": settings.calibration_lambda if calibrated else 0.0,
        "confidence_high_range": [7, 10], "confidence_low_range": [0, 3], "confidence_scale": "0-10",
        "num_train_epochs": epochs, "learning_rate": lr,
        "per_device_train_batch_size": settings.batch_size, "per_device_eval_batch_size": 64,
        "lr_scheduler_type": "cosine", "warmup_steps": 0.1, "max_length": 256, "eval_strategy": "no",
    })
    return {
        "method": "rm",
        "model": {"reward_model": str(init_dir), "tokenizer": str(init_dir), "dtype": "float32"},
        "data": {"train": str(preferences_dir), "split": "train", "eval_split": "test",
                 "confidence_prompt_fraction": 0.0},
        "eval": {"probe_batch_size": 64},
        **base,
    }


def _eval_section(eval_file: Path, settings: EvalSettings) -> dict[str, Any]:
    # no step-0 eval: the demo evaluates the SFT policy (every RL stage's start) as a stage of its own
    return {"heldout": str(eval_file), "batch_size": settings.batch_size, "max_new_tokens": settings.max_new_tokens,
            "min_slice_size": 30, "slice_keys": ["group"], "at_start": False}


def ppo_recipe(policy: str, *, sft_dir: Path, rm_dir: Path, prompts_file: Path, eval_file: Path, out_dir: Path,
               seed: int, settings: PPOSettings, eval_settings: EvalSettings) -> dict[str, Any]:
    """PPO, PPO-M, PPO-C or PPO-C with abstention, on the SFT policy (the value model starts from the RM)."""
    base = _common(f"seed{seed}-{policy}", out_dir, seed, ["ppo", policy])
    training = base["training"]
    training.update({
        "num_train_epochs": settings.epochs, "learning_rate": settings.learning_rate,
        "warmup_steps": settings.warmup,
        "per_device_train_batch_size": settings.batch_size, "gradient_accumulation_steps": 1,
        "num_mini_batches": settings.num_mini_batches, "num_ppo_epochs": settings.num_ppo_epochs,
        "local_rollout_forward_batch_size": settings.batch_size, "kl_coef": settings.kl_coef,
        "adam_beta2": settings.adam_beta2, "max_step_kl": settings.max_step_kl,
        "response_length": settings.response_length, "stop_token": "eos", "temperature": 1.0,
        "missing_eos_penalty": 1.0, "num_sample_generations": 0, "missing_confidence": "penalty",
        "share_prompt_prefix": settings.share_prompt_prefix,
    })
    flat: dict[str, Any] = {
        "normalize_reward": settings.normalize_reward, "missing_confidence_penalty": settings.missing_confidence_penalty,
        "correctness_mode": settings.verifiable_correctness_mode if policy.endswith("_v") else "off",
        "correct_reward": 1.0, "wrong_reward": 0.0,
    }
    if policy in ("ppo_c", "ppo_c_abstain"):
        weight = settings.abstain_ppo_c_weight if policy == "ppo_c_abstain" else settings.ppo_c_weight
        flat.update({"ppo_c_variant": settings.ppo_c_variant, "ppo_c_weight": weight,
                     "ppo_c_alpha": settings.ppo_c_alpha})
    if policy == "ppo_c_abstain":
        flat.update({"correctness_mode": "replace", "abstention_reward": float(settings.abstention_reward)})
    # rm (normalised), correctness where verifiable, clamp, PPO-C, clamp, missing penalty, abstention
    training["rewards"] = terms_from_flat_keys(flat, "penalty")
    return {
        "method": "ppo",
        # no model.tokenizer: the policy reads its own tokenizer, the reward model its own (which drops the
        # elicitation instruction), so calrl's PPO re-tokenises what the reward model scores
        "model": {"policy": str(sft_dir), "reward_model": str(rm_dir), "dtype": "float32"},
        "data": {"train": str(prompts_file), "confidence_prompt_fraction": 0.0},
        "eval": _eval_section(eval_file, eval_settings),
        **base,
    }


def grpo_recipe(*, sft_dir: Path, prompts_file: Path, eval_file: Path, out_dir: Path, seed: int,
                settings: GRPOSettings, eval_settings: EvalSettings, response_length: int) -> dict[str, Any]:
    """GRPO with the Brier (RLCR) reward and no per-group std scaling, on the SFT policy."""
    base = _common(f"seed{seed}-grpo_brier", out_dir, seed, ["grpo", "brier"])
    base["training"].update({
        "reward_funcs": ["brier"], "scale_rewards": "none", "missing_confidence": "half",
        "num_train_epochs": settings.epochs, "learning_rate": settings.learning_rate,
        "per_device_train_batch_size": settings.batch_size, "gradient_accumulation_steps": 1,
        "num_generations": settings.num_generations, "max_completion_length": response_length,
        "temperature": 1.0, "beta": settings.beta, "lr_scheduler_type": "constant",
    })
    return {
        "method": "grpo",
        "model": {"policy": str(sft_dir), "tokenizer": str(sft_dir), "dtype": "float32"},
        "data": {"train": str(prompts_file), "confidence_prompt_fraction": 0.0},
        "eval": _eval_section(eval_file, eval_settings),
        **base,
    }


def write_recipe(recipe: dict[str, Any], path: Path) -> Path:
    header = "# Written by `calrl demo` (calrl/demo/recipes.py); run with the calrl train-* command of its method.\n"
    write_text(path, header + yaml.safe_dump(recipe, sort_keys=False))
    return path
