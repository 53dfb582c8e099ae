"""The report's prose and number formatting, from ``summary.json`` only.

:func:`fmt` formats every number the report shows (so the report equals the summary); :func:`claims_lines` says in
how many seeds each expected outcome holds; :func:`paragraphs` writes one plain paragraph per policy from those
numbers, saying plainly where a method did not help.
"""

from __future__ import annotations

from typing import Any

from calrl.demo.recipes import (
    ABSTENTION_REFERENCE,
    ECE_COMPARISONS,
    METHOD_NAMES,
    POLICIES,
    accuracy_check,
    ece_check,
)
from calrl.demo.summary import ABSTAIN_NEVER_MIN, ABSTAIN_OFTEN_MAX, STATED_MIN, states_confidence
from calrl.demo.world import group_of
from calrl.formatting import fmt as format_number

CHECK_TEXT = {
    "ppo_more_overconfident_than_sft": "PPO (reward model alone) ends more confident and worse calibrated than SFT "
                                       "(higher mean stated confidence on the questions both answered, and higher "
                                       "ECE)",
    "ppo_v_more_overconfident_than_sft": ("PPO + correctness ends more confident and worse calibrated than SFT (on "
                                          "the questions both answered)"),
    "ppo_more_confident_every_slice": "PPO (reward model alone) states higher confidence than SFT in every slice "
                                      "and has higher ECE",
    "ppo_more_confident_on_never_seen": "PPO (reward model alone) states higher confidence than SFT on the "
                                        "never-seen people (answers it cannot know) and has higher ECE",
    "ppo_v_more_confident_on_never_seen": "PPO + correctness states higher confidence than SFT on the never-seen "
                                          "people and has higher ECE",
    **{ece_check(p, b): f"{METHOD_NAMES[p]}: ECE at least 30% lower than {METHOD_NAMES[b]}'s"
       for p, b in ECE_COMPARISONS},
    **{accuracy_check(p, b): (f"{METHOD_NAMES[p]}: accuracy at most 2 points below {METHOD_NAMES[b]}'s (paired 95% "
                              "interval of the difference above -2 points)") for p, b in ECE_COMPARISONS},
    "ppo_c_abstain_abstains_where_it_cannot_know": (
        f"PPO-C + abstention abstains on most never-seen people (refusal rate at least {ABSTAIN_NEVER_MIN:g}) and "
        f"almost never on well-known ones (at most {ABSTAIN_OFTEN_MAX:g})"),
}



def stated_note(summary: dict[str, Any]) -> str:
    """The rule every calibration and confidence claim above follows, and the runs that fell under it."""
    under = [f"{METHOD_NAMES[p]} in seed {seed} ({fmt(entry['stated_rate'] * 100, 0)}% of its answers)"
             for p, data in summary["policies"].items() for seed, entry in data["per_seed"].items()
             if not states_confidence(summary, p, seed)]
    return (f"A claim about a policy's calibration or stated confidence holds in a seed only if the policy stated a "
            f"confidence on at least {STATED_MIN:.0%} of the questions it answered (an ECE over the few answers "
            "that still state one is not the calibration of what the policy says); below that the claim fails for "
            "the method and has no verdict when it is the baseline. "
            + (f"Below it in this study: {'; '.join(under)}." if under else "Every policy here is above it."))


def fmt(value: Any, digits: int = 3) -> str:
    """One number as the demo report shows it (3 decimals; ``n/a`` for missing)."""
    return format_number(value, digits)


def fmt_agg(agg: dict[str, Any]) -> str:
    """``mean ± std`` of an aggregate (just the mean for one seed)."""
    if agg.get("mean") is None:
        return "n/a"
    if agg.get("n", 0) > 1:
        return f"{fmt(agg['mean'])} ± {fmt(agg['std'])}"
    return fmt(agg["mean"])



def ran(summary: dict[str, Any], policies: tuple[str, ...] = POLICIES) -> list[str]:
    """The policies of ``policies`` this study ran (the quick run leaves the verifiable-reward ones out)."""
    return [p for p in policies if p in summary["policies"]]



def interval(low: Any, high: Any) -> str:
    return "n/a" if low is None or high is None else f"[{fmt(low)}, {fmt(high)}]"



SLICE_TEXT = {  # what each slice of the held-out set is (calrl/demo/world.py)
    "fact-often": "well-known people (the SFT data states their true city several times)",
    "fact-rarely": "rarely-seen people (the SFT data states their true city once and a wrong one once)",
    "fact-never": "never-seen people (the SFT data states only wrong cities, so every answer is a guess)",
}


def one_seed(summary: dict[str, Any]) -> bool:
    """A study of one seed (the quick run): nothing in it can be counted or spread over seeds."""
    return len(summary["seeds"]) < 2


def one_seed_caveat(summary: dict[str, Any]) -> str | None:
    """What a one-seed study cannot support, said plainly (None with two or more seeds)."""
    if not one_seed(summary):
        return None
    text = (f"This run has one seed ({summary['seeds'][0]}), so it cannot support any claim about seeds: not in "
            "how many seeds a check holds (each verdict below is this one seed's outcome, not a count), not "
            "the spread over seeds (no ± below) and not an interval over seeds (none is computed). The intervals "
            "in brackets are `calrl compare`'s, over the held-out items of this seed: they say how sure this "
            "seed's difference is, not whether another seed would give it.")
    if summary.get("quick"):
        text += (" It is also the quick run: its reward models train on fewer comparisons and its bootstraps use "
                 "fewer resamples than the full study's. It shows that every stage runs and what one seed did; "
                 "the claims are the full study's (`calrl demo`, several seeds).")
    return text


def points(value: float | None) -> str:
    """An accuracy difference in points (``+0.8``), ``n/a`` for missing."""
    return "n/a" if value is None else f"{value * 100:+.1f}"


def pooled_verdict(check: dict[str, Any]) -> str:
    """The verdict of a check over the pooled held-out answers (the accuracy claims), with its numbers."""
    pooled = check["pooled"]
    numbers = (f"difference {points(pooled['difference'])} points, {check['level']:.0%} interval "
               f"[{points(pooled['low'])}, {points(pooled['high'])}] over {pooled['n']} paired answers "
               f"({pooled['a_only']} right only by the method, {pooled['b_only']} only by PPO)")
    if check["passed"] is None:
        return (f"no verdict: {pooled['n']} paired answers cannot show it (even identical answers give a lower "
                f"bound of {points(check['best_possible_low'])} points); {numbers}")
    return f"{'holds' if check['passed'] else 'does not hold'} over the {check['n_seeds']} seeds' answers: {numbers}"


def in_seeds(summary: dict[str, Any], check: dict[str, Any], *, means: bool = True) -> str:
    """Where a check holds: "in k of n seeds on its own (and on the means)", or for one seed "in seed s: yes"."""
    if one_seed(summary):
        flag = check["per_seed"][0]
        return f"in seed {summary['seeds'][0]}: " + {True: "yes", False: "no", None: "no verdict"}[flag]
    text = f"in {check['seeds_passed']} of {check['seeds']} seeds"
    if means:
        text += f" on its own ({'and' if check['on_means'] else 'but not'} on the means)"
    return text


def claims_lines(summary: dict[str, Any]) -> list[str]:
    """One line per expected outcome: in how many seeds it holds on its own, and whether on the means (for one
    seed: whether it holds in that seed); the accuracy claims, judged on every seed's answers pooled, their
    verdict and interval."""
    lines = []
    for key, c in summary["checks"].items():
        if c.get("scope") == "pooled":
            lines.append(f"{CHECK_TEXT.get(key, key)}: {pooled_verdict(c)}")
        elif one_seed(summary):
            flag = c["per_seed"][0]
            verdict = {True: "holds", False: "does not hold", None: "no verdict"}[flag]
            lines.append(f"{CHECK_TEXT.get(key, key)}: {verdict} in seed {summary['seeds'][0]} (one seed)")
        else:
            means = {True: " (holds on the means)", False: " (does not hold on the means)",
                     None: ""}[c.get("on_means")]
            lines.append(f"{CHECK_TEXT.get(key, key)}: holds in {c['seeds_passed']} of {c['seeds']} seeds{means}")
    return lines


# ------------------------------------------------------------------------------------------- paragraphs
def _m(summary: dict[str, Any], policy: str, key: str) -> float | None:
    return summary["policies"][policy][key]["mean"]


def _means(summary: dict[str, Any], policy: str, keys: tuple[str, ...]) -> dict[str, float | None]:
    return {k: _m(summary, policy, k) for k in keys}


def _change(a: float | None, b: float | None, what: str, *, points: bool = False) -> str:
    if a is None or b is None:
        return f"{what} could not be compared"
    if points:
        return f"{what} {fmt(a)} -> {fmt(b)} ({(b - a) * 100:+.1f} points)"
    return f"{what} {fmt(a)} -> {fmt(b)}"


def _over(summary: dict[str, Any]) -> str:
    n = len(summary["seeds"])
    return f"over {n} seed{'s' if n > 1 else ''}"


def _sft_paragraph(summary: dict[str, Any]) -> str:
    sft = _means(summary, "sft", ("accuracy", "ece", "mean_confidence", "refusal_rate"))
    slice_acc = summary["policies"]["sft"]["slice_accuracy"]
    slice_conf = summary["policies"]["sft"]["slice_mean_confidence"]
    per_slice = "; ".join(f"{g}: accuracy {fmt(slice_acc[g]['mean'])}, stated {fmt(slice_conf.get(g, {}).get('mean'))}"
                          for g in summary["slices"] if g in slice_acc)
    return (f"SFT ({_over(summary)}): accuracy {fmt(sft['accuracy'])}, mean stated confidence "
            f"{fmt(sft['mean_confidence'])}, ECE {fmt(sft['ece'])}, refusal rate {fmt(sft['refusal_rate'])}. "
            f"Per slice ({per_slice}). This is the starting point every RL policy shares.")


def _overconfidence_paragraph(summary: dict[str, Any], ppo: str, label: str) -> str:
    """Vanilla PPO (``ppo`` or ``ppo_v``) against SFT: the overconfidence claim."""
    sft = _means(summary, "sft", ("accuracy", "ece", "mean_confidence"))
    p = _means(summary, ppo, ("accuracy", "ece", "mean_confidence"))
    probe = summary["reward_models"]["rm_plain"]
    check = summary["checks"][f"{ppo}_more_overconfident_than_sft"]
    n = check["numbers"]
    paired = _change(n["sft_mean_confidence_paired"], n[f"{ppo}_mean_confidence_paired"],
                     "mean confidence on the questions both answered")
    verdict = (f"Higher mean confidence on the questions both answered ({paired}) and higher ECE than SFT "
               f"{in_seeds(summary, check)}; ")
    slices = summary["checks"].get(f"{ppo}_more_confident_every_slice")
    if slices is not None:
        verdict += f"higher stated confidence in every slice and higher ECE {in_seeds(summary, slices, means=False)}."
    else:
        never = summary["checks"][f"{ppo}_more_confident_on_never_seen"]
        verdict += (f"higher stated confidence on the never-seen people and higher ECE "
                    f"{in_seeds(summary, never, means=False)} (on the well-known people, right every time, its "
                    f"correctness term is constant, and no claim is made there).")
    return (f"{label} ({_over(summary)}): {_change(sft['mean_confidence'], p['mean_confidence'], 'mean confidence (own answers)')}, "
            f"{_change(sft['ece'], p['ece'], 'ECE')}, "
            f"{_change(sft['accuracy'], p['accuracy'], 'accuracy', points=True)} (SFT -> PPO). {verdict} "
            f"The ordinary reward model prefers the high-confidence version of a wrong answer "
            f"{fmt(probe['rejected_prefers_high_rate']['mean'])} of the time, and the correct answer of a "
            f"correct-vs-wrong pair {fmt(probe['preference_accuracy']['mean'])} of the time.")


def _calibrated_rm_sentence(summary: dict[str, Any]) -> str:
    """What PPO-M's reward model learnt, against the ordinary one (the probe's numbers)."""
    probe = summary["reward_models"]["rm_plain"]
    cal = summary["reward_models"]["rm_calibrated"]
    return (f" The calibrated reward model prefers high confidence on wrong answers "
            f"{fmt(cal['rejected_prefers_high_rate']['mean'])} of the time (ordinary RM: "
            f"{fmt(probe['rejected_prefers_high_rate']['mean'])}) and on correct answers "
            f"{fmt(cal['chosen_prefers_high_rate']['mean'])} (ordinary: "
            f"{fmt(probe['chosen_prefers_high_rate']['mean'])}); the reward it adds for a high over a "
            f"low stated confidence is {fmt(cal['rejected_reward_difference']['mean'])} on wrong answers "
            f"(ordinary: {fmt(probe['rejected_reward_difference']['mean'])}); its held-out preference "
            f"accuracy on correct-vs-wrong pairs is {fmt(cal['preference_accuracy']['mean'])}.")


def _comparison_paragraph(summary: dict[str, Any], policy: str, base: str) -> str:
    """A calibrated method against its PPO: the lower-ECE-at-the-same-accuracy claim."""
    c = summary["checks"][ece_check(policy, base)]
    acc = summary["checks"][accuracy_check(policy, base)]
    b = _means(summary, base, ("accuracy", "ece", "mean_confidence"))
    p = _means(summary, policy, ("accuracy", "ece", "mean_confidence"))
    diff = c["numbers"]["ece_difference"]
    spread = (" (one seed: no spread or interval over seeds)" if one_seed(summary) else
              f" ± {fmt(diff['std'])} over seeds, 95% paired bootstrap interval over seeds "
              f"{interval(diff['low'], diff['high'])}")
    verdict = (f"ECE at least 30% lower than {METHOD_NAMES[base]}'s {in_seeds(summary, c)}. ECE difference "
               f"{fmt(diff['mean'])}{spread}. Accuracy at most 2 points below {METHOD_NAMES[base]}'s: "
               f"{pooled_verdict(acc)}.")
    extra = _calibrated_rm_sentence(summary) if policy == "ppo_m" else ""
    return (f"{METHOD_NAMES[policy]} ({_over(summary)}) against {METHOD_NAMES[base]}: "
            f"{_change(b['ece'], p['ece'], 'ECE')}, {_change(b['mean_confidence'], p['mean_confidence'], 'mean confidence')}, "
            f"{_change(b['accuracy'], p['accuracy'], 'accuracy', points=True)}. {verdict}{extra}")


def _abstention_paragraph(summary: dict[str, Any]) -> str:
    """PPO-C with abstention: where it abstains (per slice), and what that does to the answered and to the
    all-items risk-coverage area, against PPO + correctness (same verifiable reward, no abstention) when it ran."""
    check = summary["checks"]["ppo_c_abstain_abstains_where_it_cannot_know"]
    entry = summary["policies"]["ppo_c_abstain"]
    where = ", ".join(f"{g} {fmt(v['mean'])}" for g, v in entry["slice_refusal_rate"].items())
    never, often = group_of("never"), group_of("often")
    rates = {g: entry["slice_refusal_rate"].get(g, {}).get("mean") for g in (never, often)}
    if None in rates.values():
        verdict = "Its eval lacks a slice, so where it abstains could not be judged."
    else:
        verdict = (f"Abstains on at least {fmt(ABSTAIN_NEVER_MIN, 2)} of the never-seen people and at most "
                   f"{fmt(ABSTAIN_OFTEN_MAX, 2)} of the well-known ones: holds {in_seeds(summary, check)}.")
        if rates[never] == 0 and rates[often] == 0:
            verdict += " It never abstained on the held-out set: the abstention reward had no visible effect."
    rewards = ", ".join(f"seed {s}: {fmt(v)}" for s, v in summary["abstention_reward"].items())
    text = (f"PPO-C with an abstention reward ({rewards or 'not read'}) ({_over(summary)}): refusal rate "
            f"{fmt(_m(summary, 'ppo_c_abstain', 'refusal_rate'))} (per slice: {where}). {verdict}")
    if ABSTENTION_REFERENCE in summary["policies"]:
        ref = _means(summary, ABSTENTION_REFERENCE, ("accuracy_answered", "aurc_all_items"))
        mine = _means(summary, "ppo_c_abstain", ("accuracy_answered", "aurc_all_items"))
        text += (f" Against {METHOD_NAMES[ABSTENTION_REFERENCE]}: "
                 f"{_change(ref['accuracy_answered'], mine['accuracy_answered'], 'accuracy on answered questions')}, "
                 f"{_change(ref['aurc_all_items'], mine['aurc_all_items'], 'AURC over all items (lower is better)')}.")
    return text


def _grpo_paragraph(summary: dict[str, Any]) -> str:
    """GRPO with the Brier reward against SFT and PPO + correctness."""
    sft = _means(summary, "sft", ("accuracy", "ece", "mean_confidence"))
    g = _means(summary, "grpo_brier", ("accuracy", "ece", "mean_confidence", "auroc"))
    ppo_ece = _m(summary, "ppo_v", "ece")
    if g["ece"] is not None and sft["ece"] is not None and ppo_ece is not None:
        if g["ece"] < min(sft["ece"], ppo_ece):
            verdict = "Its ECE is below both SFT's and PPO + correctness's (on the means)."
        elif g["ece"] < ppo_ece:
            verdict = ("Its ECE is below PPO + correctness's but not below SFT's: the Brier reward did not improve "
                       "on SFT.")
        else:
            verdict = "Its ECE is not below PPO + correctness's: the Brier reward did NOT help here."
    else:
        verdict = ""
    return (f"GRPO with the Brier (RLCR) reward, no std scaling ({_over(summary)}): "
            f"{_change(sft['ece'], g['ece'], 'ECE')}, "
            f"{_change(sft['mean_confidence'], g['mean_confidence'], 'mean confidence')}, "
            f"{_change(sft['accuracy'], g['accuracy'], 'accuracy', points=True)} (SFT -> GRPO), "
            f"AUROC {fmt(g['auroc'])}. {verdict}")


OVERCONFIDENCE_LABELS = {
    "ppo": "Vanilla PPO against the ordinary reward model alone",
    "ppo_v": "Vanilla PPO against the ordinary reward model plus the rule-based correctness reward",
}


def paragraphs(summary: dict[str, Any]) -> dict[str, str]:
    """One plain paragraph per policy the study ran, generated from the summary's numbers."""
    ran_here = set(summary["policies"])
    out = {"sft": _sft_paragraph(summary)}
    for ppo, label in OVERCONFIDENCE_LABELS.items():
        if ppo in ran_here:
            out[ppo] = _overconfidence_paragraph(summary, ppo, label)
    for policy, base in ECE_COMPARISONS:
        if {policy, base} <= ran_here:
            out[policy] = _comparison_paragraph(summary, policy, base)
    if "ppo_c_abstain" in ran_here:
        out["ppo_c_abstain"] = _abstention_paragraph(summary)
    if {"grpo_brier", "ppo_v"} <= ran_here:
        out["grpo_brier"] = _grpo_paragraph(summary)
    return out
