"""``summary.json``: every policy's held-out metrics over the seeds, the RM probes, the gates, the checks.

Numbers are copied from the files the public commands wrote (``calrl eval``'s ``metrics.json``, ``calrl
compare``'s ``gate.json``, ``calrl train-rm``'s ``reward_model_report.json``, and the ``metrics.json`` of
each epoch's calibration eval that the training callback wrote into the run's output folder); the only
arithmetic here is the mean and spread over seeds, the checks of "what it must show", and the all-items
risk-coverage curve and AURC of each eval's ``resolved.jsonl`` (:mod:`calrl.demo.selective`: ``calrl eval``'s
own AURC ranks the answered items only, so it does not compare a policy that abstains with one that does not).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml

from calrl.callbacks.eval_files import read_eval_history
from calrl.data.readers import read_rows
from calrl.demo.layout import Layout, gate_pairs
from calrl.demo.recipes import (
    ECE_COMPARISONS,
    METHOD_NAMES,
    REWARD_MODELS,
    RM_BASE,
    accuracy_check,
    ece_check,
)
from calrl.demo.selective import eval_folder_view
from calrl.demo.world import GROUPS, group_of
from calrl.gate.inputs import read_resolved
from calrl.metrics import paired_difference_interval

METRIC_KEYS = ("accuracy", "accuracy_answered", "ece", "smece", "brier", "auroc", "refusal_rate",
               "mean_confidence")
SLICE_KEY = "group"
# "accuracy at most 2 points below vanilla PPO's": the lower bound of the paired 95% interval of the accuracy
# difference (Tango's score interval over the held-out answers of every seed, pooled) must lie above -2 points
ACCURACY_MARGIN = 0.02
ACCURACY_LEVEL = 0.95
ECE_REDUCTION = 0.30  # PPO-M / PPO-C: "at least 30% lower ECE than vanilla PPO"
# A claim about a policy's calibration or stated confidence holds in a seed only if the policy stated a confidence
# on at least this share of the questions it answered: an ECE over the few answers that still state one is not the
# calibration of the policy's voice (a quick study's PPO-M that stated one on 1 of its 120 answers had ECE 0.30,
# "30% below" PPO's 0.46). Below it the claim fails for the method, and has no verdict when it is the baseline
STATED_MIN = 0.9
N_SEED_BOOTSTRAP = 2000  # resamples of the seeds for the paired interval of the mean ECE difference
# "PPO-C + abstention abstains on most never-seen people and almost never on well-known ones", judged per seed on
# its refusal rates per slice: on the never-seen people (every answer a guess) at least this share abstained...
ABSTAIN_NEVER_MIN = 0.5
# ...and on the well-known people (the SFT data states their city several times) at most this share
ABSTAIN_OFTEN_MAX = 0.05


def policy_numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    """The summary's numbers of one ``metrics.json``: the headline metrics and per-slice ECE / accuracy / refusal."""
    out: dict[str, Any] = {k: metrics.get(k) for k in METRIC_KEYS if k != "smece"}
    smece = metrics.get("smece")
    out["smece"] = smece.get("value") if isinstance(smece, dict) else smece
    slices = (metrics.get("slices") or {}).get(SLICE_KEY, {})
    for name in ("ece", "accuracy", "accuracy_answered", "refusal_rate", "mean_confidence"):
        out[f"slice_{name}"] = {g: slices[g].get(name) for g in GROUPS if g in slices}
    out["slice_n"] = {g: slices[g].get("n") for g in GROUPS if g in slices}
    out["slice_n_abstained"] = {g: slices[g].get("n_abstained") for g in GROUPS if g in slices}
    answered, scored = metrics.get("n_answered"), metrics.get("n_scored")
    out["stated_rate"] = scored / answered if answered and scored is not None else None  # see STATED_MIN
    return {k: out[k] for k in (*METRIC_KEYS, "stated_rate", *[k for k in out if k.startswith("slice_")])}


def aggregate(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one seed), min and max of the non-missing values."""
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not present:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": values}
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return {"mean": statistics.fmean(present), "std": std, "min": min(present), "max": max(present),
            "n": len(present), "values": values}


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def filter_composition(layout: Layout) -> dict[str, Any]:
    """How many comparisons of each kind ``calrl data filter-preferences`` kept for the calibrated reward model
    (the stronger half by preference strength should be mostly the fact checks)."""
    path = layout.filtered()
    return {"kept": dict(sorted(Counter(r.get("kind") for r in read_rows(path)).items())) if path.is_file() else {}}


def policy_entry(policy: str, layout: Layout, seeds: list[int]) -> dict[str, Any]:
    """One policy's numbers per seed (its ``metrics.json``, and the all-items selective view of its
    ``resolved.jsonl``: :mod:`calrl.demo.selective`), aggregated over the seeds."""
    per_seed = {}
    for seed in seeds:
        path = layout.eval_dir(seed, policy) / "metrics.json"
        per_seed[str(seed)] = {**policy_numbers(_read_json(path)), **eval_folder_view(path.parent),
                               "metrics_file": str(path)}
    entry: dict[str, Any] = {"method": METHOD_NAMES[policy], "per_seed": per_seed}
    for key in (*METRIC_KEYS, "aurc_all_items"):
        entry[key] = aggregate([per_seed[str(s)][key] for s in seeds])
    for key in ("slice_ece", "slice_accuracy", "slice_refusal_rate", "slice_mean_confidence"):
        groups = [g for g in GROUPS if any(g in per_seed[str(s)][key] for s in seeds)]
        entry[key] = {g: aggregate([per_seed[str(s)][key].get(g) for s in seeds]) for g in groups}
    entry["ece_per_epoch"] = ({} if policy == "sft" else  # SFT has no per-epoch calibration eval
                              {str(s): ece_history(layout.model_dir(s, policy)) for s in seeds})
    return entry


def reward_model_entries(layout: Layout, seeds: list[int]) -> dict[str, Any]:
    """Each reward model's confidence-bias probe (``reward_model_report.json``) per seed of ``seeds`` (the
    study trains them once, seeded with its first seed: ``seeds`` is that one), aggregated."""
    reward_models = {}
    for rm in (RM_BASE, *REWARD_MODELS):
        per_seed = {}
        for seed in seeds:
            report = _read_json(layout.model_dir(seed, rm) / "reward_model_report.json")
            bias = report["confidence_bias"]
            per_seed[str(seed)] = {
                "preference_accuracy": report["preference_accuracy"],
                "chosen_prefers_high_rate": bias["chosen"]["prefers_high_rate"],
                "rejected_prefers_high_rate": bias["rejected"]["prefers_high_rate"],
                "chosen_reward_difference": bias["chosen"]["mean_reward_difference_high_minus_low"],
                "rejected_reward_difference": bias["rejected"]["mean_reward_difference_high_minus_low"],
                "mean_reward_correct": report["mean_reward_chosen"],
                "mean_reward_wrong": report["mean_reward_rejected"],
                "n_pairs": report["n_pairs"],
            }
        keys = list(next(iter(per_seed.values())))
        reward_models[rm] = {"per_seed": per_seed,
                             **{k: aggregate([per_seed[str(s)][k] for s in seeds]) for k in keys if k != "n_pairs"}}
    return reward_models


def gate_entries(layout: Layout, seeds: list[int], policies: tuple[str, ...]) -> list[dict[str, Any]]:
    """``calrl compare``'s verdict and ECE delta of every gated pair, per seed (``gate.json``)."""
    gates = []
    for seed in seeds:
        for candidate, baseline in gate_pairs(policies):
            gate = _read_json(layout.gate_dir(seed, candidate, baseline) / "gate.json")
            ece = (gate.get("deltas") or {}).get("ece") or {}
            gates.append({"seed": seed, "candidate": candidate, "baseline": baseline, "verdict": gate["verdict"],
                          "ece_delta": ece.get("delta"), "ece_delta_low": ece.get("low"),
                          "ece_delta_high": ece.get("high"), "ece_delta_level": ece.get("level"),
                          "reasons": [r["code"] for r in gate.get("reasons", [])],
                          "warnings": [w["code"] for w in gate.get("warnings", [])],
                          "file": str(layout.gate_dir(seed, candidate, baseline) / "gate.json")})
    return gates


def build_summary(config: Any, layout: Layout, results: dict[str, Any], *, counts: dict[str, int],
                  machine: dict[str, Any], command: str) -> dict[str, Any]:
    seeds = list(config.seeds)
    abstention = {}
    for seed in seeds if "ppo_c_abstain" in config.policies else ():
        recipe = layout.recipe(seed, "ppo_c_abstain")
        terms = _recipe_value(recipe, "rewards") or []
        value = next((t.get("value") for t in terms if isinstance(t, dict) and t.get("name") == "abstention"), None)
        abstention[str(seed)] = None if value is None else float(value)

    summary = {
        "command": command,
        "quick": config.quick,
        "seeds": seeds,
        "machine": machine,
        "config": config.to_dict(),
        "counts": counts,
        "metric_keys": list(METRIC_KEYS),
        "slice_key": SLICE_KEY,
        "slices": list(config.world.groups),
        "policies": {policy: policy_entry(policy, layout, seeds) for policy in config.policies},
        "shared_seed": seeds[0],  # the seed of the SFT policy and reward models every seed's RL starts from
        "reward_models": reward_model_entries(layout, seeds[:1]),
        "calibration_filter": filter_composition(layout),
        "abstention_reward": abstention,
        "gates": gate_entries(layout, seeds, config.policies),
        "timings": stage_timings(results),
    }
    summary["paired_confidence"] = {
        pair_key(ppo, "sft"): [paired_confidence(layout, seed, ppo, "sft") for seed in seeds]
        for ppo in ("ppo", "ppo_v") if {ppo, "sft"} <= set(config.policies)}
    summary["accuracy_differences"] = {
        pair_key(policy, base): accuracy_non_inferiority(layout, seeds, policy, base)
        for policy, base in ECE_COMPARISONS if {policy, base} <= set(config.policies)}
    summary["checks"] = study_checks(summary)
    return summary


def pair_key(policy: str, base: str) -> str:
    """The key of a policy compared with a baseline in ``summary.json``'s ``paired_confidence`` and
    ``accuracy_differences`` (``"ppo_m-ppo"``)."""
    return f"{policy}-{base}"


def _recipe_value(path: Path, key: str) -> Any:
    if not path.is_file():
        return None
    return (yaml.safe_load(path.read_text()).get("training") or {}).get(key)


def ece_history(model_dir: Path) -> list[dict[str, Any]]:
    """ECE, accuracy and mean confidence after each epoch, from the ``calibration_eval/epoch-<k>/metrics.json``
    files the training callback wrote into the run's output folder; ``epoch`` is k (a partial last epoch
    counts as the next whole one), ``step`` the global step of the eval."""
    return [{"step": e.global_step, "epoch": e.index, "ece": e.number("ece"), "accuracy": e.number("accuracy"),
             "mean_confidence": e.number("mean_confidence")}
            for e in sorted(read_eval_history(model_dir, kind="epoch"), key=lambda e: e.index)]


def _mean(summary: dict[str, Any], policy: str, key: str) -> float | None:
    return summary["policies"][policy][key]["mean"]


def _seed_values(summary: dict[str, Any], policy: str, key: str) -> list[float | None]:
    return [summary["policies"][policy]["per_seed"][str(seed)][key] for seed in summary["seeds"]]


def states_confidence(summary: dict[str, Any], policy: str, seed: int | str) -> bool:
    """Whether ``policy`` stated a confidence on at least :data:`STATED_MIN` of its answers in ``seed`` (a summary
    without the rate counts as yes)."""
    rate = summary["policies"][policy]["per_seed"][str(seed)].get("stated_rate")
    return rate is None or rate >= STATED_MIN


def _stated(summary: dict[str, Any], policy: str, base: str | None, flags: list[bool | None]) -> list[bool | None]:
    """Per-seed verdicts with :data:`STATED_MIN` applied: False where ``policy`` stated too few confidences, no
    verdict where ``base`` did."""
    out: list[bool | None] = []
    for seed, flag in zip(summary["seeds"], flags):
        if not states_confidence(summary, policy, seed):
            flag = False
        elif base is not None and not states_confidence(summary, base, seed):
            flag = None
        out.append(flag)
    return out


def _count(flags: list[bool | None]) -> dict[str, int]:
    return {"seeds_passed": sum(1 for f in flags if f), "seeds": len(flags)}


# The policies claimed to state more confidence than SFT in every slice, the well-known people included: vanilla
# PPO, whose only reward is the ordinary reward model, which pays for confidence on every answer. Not PPO +
# correctness: on the well-known people it is right every time, so its correctness term is the same whatever it
# states, and what is left to push it up there is the reward model's premium for 10 over 8 on a right answer (about
# 0.15 reward std), against a reward whose spread the correctness term widened. In every full study since the
# eighth version it ended below SFT there in 1 or 2 of 5 seeds on some MKL path, by 0.05-0.07 (0.87-0.90 against
# 0.94-0.95; docs/history/demo_findings.md, eleventh version): a climb there is not what RL with a correctness
# reward predicts, so it is not claimed. Its overconfidence claims are the paired mean and the never-seen people.
SLICE_CLAIMS = ("ppo",)


def study_checks(summary: dict[str, Any]) -> dict[str, Any]:
    """What the study is expected to show, judged seed by seed: ``seeds_passed`` of ``seeds``; ``passed`` is
    true only when it holds in every seed (``on_means`` says whether it holds on the means over seeds)."""
    checks: dict[str, Any] = {}

    def overconfident(sc: float | None, pc: float | None, se: float | None, pe: float | None) -> bool | None:
        return None if None in (sc, pc, se, pe) else (pc > sc and pe > se)

    def better(ece: float | None, base_ece: float | None) -> bool | None:
        return None if None in (ece, base_ece) else ece <= (1 - ECE_REDUCTION) * base_ece

    ran = set(summary["policies"])
    for ppo in ("ppo", "ppo_v"):
        if ppo not in ran:
            continue
        paired = summary["paired_confidence"][pair_key(ppo, "sft")]
        sft_conf, ppo_conf = [[s["base"] for s in paired], [s["policy"] for s in paired]]
        sft_ece, ppo_ece = _seed_values(summary, "sft", "ece"), _seed_values(summary, ppo, "ece")
        per_seed = _stated(summary, ppo, "sft", [overconfident(*v) for v in zip(sft_conf, ppo_conf, sft_ece, ppo_ece)])
        means = {"sft_mean_confidence_paired": aggregate(sft_conf)["mean"],
                 f"{ppo}_mean_confidence_paired": aggregate(ppo_conf)["mean"],
                 "sft_ece": _mean(summary, "sft", "ece"), f"{ppo}_ece": _mean(summary, ppo, "ece")}
        checks[f"{ppo}_more_overconfident_than_sft"] = {
            **_verdict(per_seed, overconfident(*means.values())),
            "numbers": {**means, "paired_items_per_seed": [s["n"] for s in paired]}}
        # The mean confidence is over the items both policies answered with a stated confidence: over each
        # policy's own answers it also moved with what a policy refuses (SFT refuses mostly the never-seen people,
        # where it states its lowest confidences, so a PPO that answers them all with more confidence than SFT
        # could still average less: seen in a quick run). The same claim slice by slice follows.
        if ppo in SLICE_CLAIMS:
            per_seed = _stated(summary, ppo, "sft", [slices_more_confident(summary, ppo, seed)
                                                     for seed in summary["seeds"]])
            checks[f"{ppo}_more_confident_every_slice"] = {**_verdict(per_seed, None), "numbers": {}}
        per_seed = _stated(summary, ppo, "sft", [slices_more_confident(summary, ppo, seed, slices=(group_of("never"),))
                                                 for seed in summary["seeds"]])
        checks[f"{ppo}_more_confident_on_never_seen"] = {**_verdict(per_seed, None), "numbers": {}}

    for policy, base in ECE_COMPARISONS:
        if not {policy, base} <= ran:
            continue
        values = [_seed_values(summary, policy, "ece"), _seed_values(summary, base, "ece")]
        means = [_mean(summary, policy, "ece"), _mean(summary, base, "ece")]
        checks[ece_check(policy, base)] = {
            **_verdict(_stated(summary, policy, base, [better(*v) for v in zip(*values)]), better(*means)),
            "numbers": {f"{policy}_ece": means[0], f"{base}_ece": means[1], "ece_reduction": ECE_REDUCTION,
                        "ece_difference": ece_difference(summary, policy, base)},
        }
        checks[accuracy_check(policy, base)] = summary["accuracy_differences"][pair_key(policy, base)]
    if "ppo_c_abstain" in ran:
        checks["ppo_c_abstain_abstains_where_it_cannot_know"] = abstention_where_unknowable(summary)
    return checks


def slices_more_confident(summary: dict[str, Any], policy: str, seed: int,
                          slices: tuple[str, ...] | None = None) -> bool | None:
    """In one seed: ``policy`` states a higher mean confidence than SFT in every slice of ``slices`` (default:
    all) and has a higher ECE overall."""
    mine, sft = summary["policies"][policy]["per_seed"][str(seed)], summary["policies"]["sft"]["per_seed"][str(seed)]
    pairs = [(mine["slice_mean_confidence"].get(g), sft["slice_mean_confidence"].get(g))
             for g in (slices or summary["slices"])]
    if any(None in p for p in pairs) or None in (mine["ece"], sft["ece"]):
        return None
    return all(a > b for a, b in pairs) and mine["ece"] > sft["ece"]


def _verdict(per_seed: list[bool | None], on_means: bool | None) -> dict[str, Any]:
    known = [f for f in per_seed if f is not None]
    return {"passed": (all(known) if known and len(known) == len(per_seed) else None), "on_means": on_means,
            "per_seed": per_seed, **_count(per_seed)}


def ece_difference(summary: dict[str, Any], policy: str, base: str) -> dict[str, Any]:
    """ECE(policy) - ECE(base) per seed (paired: same seed, same SFT policy and held-out items), their mean,
    spread and a paired bootstrap interval of the mean over seeds (the seeds resampled with replacement,
    ``N_SEED_BOOTSTRAP`` times, seeded), and each seed's own interval over held-out items from
    ``calrl compare`` (``gate.json`` deltas) when that pair was gated."""
    diffs = [None if None in (a, b) else a - b
             for a, b in zip(_seed_values(summary, policy, "ece"), _seed_values(summary, base, "ece"))]
    present = [d for d in diffs if d is not None]
    out: dict[str, Any] = {"per_seed": diffs, **aggregate(present), "low": None, "high": None,
                           "level": 0.95, "n_boot": N_SEED_BOOTSTRAP}
    out.pop("values", None)
    if len(present) > 1:
        rng = random.Random(0)
        means = sorted(statistics.fmean(rng.choices(present, k=len(present))) for _ in range(N_SEED_BOOTSTRAP))
        out["low"] = means[int(0.025 * N_SEED_BOOTSTRAP)]
        out["high"] = means[int(0.975 * N_SEED_BOOTSTRAP) - 1]
    gates = {g["seed"]: g for g in summary.get("gates", []) if (g["candidate"], g["baseline"]) == (policy, base)}
    out["per_seed_item_interval"] = [
        [gates[s].get("ece_delta_low"), gates[s].get("ece_delta_high")] if s in gates else None
        for s in summary["seeds"]]
    return out


def _records_by_id(layout: Layout, seed: int, policy: str) -> dict[str, Any]:
    """The resolved records ``calrl eval`` wrote for ``policy`` in one seed (``resolved.jsonl``), by item id."""
    return {r.id: r for r in read_resolved(layout.eval_dir(seed, policy) / "resolved.jsonl")}


def _paired_correct(layout: Layout, seed: int, policy: str, base: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct or not (an abstention is not) of ``policy`` and ``base`` on each held-out item of one seed,
    paired by item id."""
    mine, theirs = _records_by_id(layout, seed, policy), _records_by_id(layout, seed, base)
    if mine.keys() != theirs.keys():
        raise ValueError(f"{layout.eval_dir(seed, policy)} and {layout.eval_dir(seed, base)} evaluated different "
                         f"items ({len(mine.keys() ^ theirs.keys())} not in both)")
    ids = sorted(mine)
    return torch.tensor([mine[i].correct for i in ids]), torch.tensor([theirs[i].correct for i in ids])


def paired_confidence(layout: Layout, seed: int, policy: str, base: str) -> dict[str, Any]:
    """Mean stated confidence of ``policy`` and of ``base`` over the held-out items both answered with a stated
    confidence (one seed), and how many those are: the same questions on both sides, whatever either refuses."""
    def stated(p: str) -> dict[str, float]:
        return {i: r.confidence for i, r in _records_by_id(layout, seed, p).items()
                if not r.abstained and r.confidence is not None}

    mine, theirs = stated(policy), stated(base)
    common = sorted(mine.keys() & theirs.keys())
    if not common:
        return {"policy": None, "base": None, "n": 0}
    return {"policy": statistics.fmean(mine[i] for i in common), "base": statistics.fmean(theirs[i] for i in common),
            "n": len(common)}


def _interval_numbers(out: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {k: (v.item() if k in ("difference", "low", "high") else int(v)) for k, v in out.items()}


def accuracy_non_inferiority(layout: Layout, seeds: list[int], policy: str, base: str) -> dict[str, Any]:
    """Is ``policy`` at most :data:`ACCURACY_MARGIN` less accurate than ``base``? A statement over items.

    Accuracy(policy) - accuracy(base) with Tango's paired score interval (:func:`calrl.metrics.
    paired_difference_interval`, level :data:`ACCURACY_LEVEL`) over the held-out answers of every seed pooled
    (seed s's answer to item i by each policy is one pair), and per seed for reference. ``passed``: the pooled
    lower bound lies above ``-ACCURACY_MARGIN``. ``None`` (no verdict) when the pooled pairs are too few for any
    outcome to show it: even identical answers give a lower bound of ``-z^2 / (n + z^2)`` (-3.1 points at one
    seed's 120 items), so one seed of this held-out set cannot support the claim and says so.

    The pooled pairs count each seed's answer to the same person separately; the seeds share the SFT policy and
    reward models, so answers to one person in two seeds are not independent, and the interval is narrower than
    one that resampled the people would be (a larger held-out set did not fit the time budget: the RL prompts
    must ask about every held-out person for RL to move its answers, see :mod:`calrl.demo.world`).
    """
    alpha = 1 - ACCURACY_LEVEL
    pairs = [_paired_correct(layout, seed, policy, base) for seed in seeds]
    per_seed = [_interval_numbers(paired_difference_interval(a, b, alpha=alpha)) for a, b in pairs]
    a_all, b_all = torch.cat([a for a, _ in pairs]), torch.cat([b for _, b in pairs])
    pooled = _interval_numbers(paired_difference_interval(a_all, b_all, alpha=alpha))
    same = paired_difference_interval(a_all, a_all, alpha=alpha)  # the narrowest interval n pairs can give
    best_low = same["low"].item()
    passed = None if best_low <= -ACCURACY_MARGIN else pooled["low"] > -ACCURACY_MARGIN
    return {"passed": passed, "scope": "pooled", "margin": ACCURACY_MARGIN, "level": ACCURACY_LEVEL,
            "pooled": pooled, "per_seed_interval": per_seed, "n_seeds": len(seeds), "best_possible_low": best_low,
            "method": "Tango score interval, paired by held-out item"}


def abstention_where_unknowable(summary: dict[str, Any]) -> dict[str, Any]:
    """Does PPO-C + abstention abstain on most never-seen people and almost never on the well-known ones?

    Per seed: its refusal rate on the never-seen people (``group_of("never")``) is at least
    :data:`ABSTAIN_NEVER_MIN` and on the well-known ones (``group_of("often")``) at most
    :data:`ABSTAIN_OFTEN_MAX`; no verdict for a seed whose eval lacks either slice. ``on_means``: the same on
    the refusal rates' means over seeds.
    """
    never, often = group_of("never"), group_of("often")

    def holds(rate_never: float | None, rate_often: float | None) -> bool | None:
        if rate_never is None or rate_often is None:
            return None
        return rate_never >= ABSTAIN_NEVER_MIN and rate_often <= ABSTAIN_OFTEN_MAX

    entry = summary["policies"]["ppo_c_abstain"]
    rates = [(r["slice_refusal_rate"].get(never), r["slice_refusal_rate"].get(often))
             for r in (entry["per_seed"][str(seed)] for seed in summary["seeds"])]
    means = [entry["slice_refusal_rate"].get(g, {}).get("mean") for g in (never, often)]
    return {**_verdict([holds(*r) for r in rates], holds(*means)),
            "numbers": {f"refusal_rate_{never}": means[0], f"refusal_rate_{often}": means[1],
                        "per_seed": {str(seed): {never: r[0], often: r[1]} for seed, r in zip(summary["seeds"], rates)},
                        "never_seen_min": ABSTAIN_NEVER_MIN, "well_known_max": ABSTAIN_OFTEN_MAX}}


def stage_timings(results: dict[str, Any]) -> dict[str, Any]:
    """Seconds per stage (sum of its processes' run times) and per task; reused tasks keep their first time.

    ``results`` maps task names to the study runner's ``TaskResult``."""
    per_stage: dict[str, float] = {}
    for res in results.values():
        per_stage[res.stage] = per_stage.get(res.stage, 0.0) + res.seconds
    return {"process_seconds_per_stage": {k: round(v, 1) for k, v in per_stage.items()},
            "tasks": {name: {"seconds": round(res.seconds, 1), "reused": res.reused, "command": res.command}
                      for name, res in results.items()}}
