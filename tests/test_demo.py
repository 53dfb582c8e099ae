"""The offline study (``calrl demo``): its parts, and the quick variant end to end (files and consistency).

The end-to-end test checks that every stage ran through the public commands and left its files, that
``summary.json`` holds exactly what each policy's ``metrics.json`` says, that the report shows exactly the
summary's numbers, that ``calrl demo --readme-table`` prints exactly the block the run printed, and that a
second run reuses every finished stage. Of the outcome it checks only what the quick run is meant to show:
vanilla PPO ends more confident than SFT.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from calrl.cli.main import main
from calrl.demo.layout import task_name
from calrl.demo.preferences import build_factcheck_rows, build_preference_rows
from calrl.demo.recipes import MAIN_POLICIES, POLICIES, REWARD_MODELS, RL_POLICIES, RM_BASE
from calrl.demo.report import CHECK_TEXT, HEADLINE_COLUMNS, fmt_agg
from calrl.demo.sft import ABSTAIN_TEXT, SFTTargetConfig, build_demo_tokenizer, sft_target
from calrl.demo.study import (
    Layout,
    build_tasks,
    final_eval_predictions,
    full_config,
    gate_pairs,
    quick_config,
    write_world_files,
)
from calrl.demo.summary import METRIC_KEYS, aggregate, policy_numbers
from calrl.demo.world import FREQUENCIES, WorldConfig, build_world, group_of


# ------------------------------------------------------------------------------------------------ world
@pytest.mark.parametrize("frequencies", [("often", "never"), FREQUENCIES])
def test_world_is_deterministic_with_knowable_slices(frequencies):
    a, b = (build_world(WorldConfig(seed=3, frequencies=frequencies)) for _ in range(2))
    assert [i.to_json() for i in a.eval_items] == [i.to_json() for i in b.eval_items]
    assert [i.to_json() for i in a.sft_items] == [i.to_json() for i in b.sft_items]
    assert build_world(WorldConfig(seed=4, frequencies=frequencies)).people != a.people
    groups = set(a.config.groups)
    assert groups == {group_of(f) for f in frequencies}
    assert {i.slice["group"] for i in a.eval_items} == groups
    demos: dict[str, list[str]] = {}
    for item in a.sft_items:
        demos.setdefault(item.question.split()[2], []).append(item.reference[0])
    for name, (city, freq) in a.people.items():
        if freq == "often":  # always the true city
            assert set(demos[name]) == {city}
        elif freq == "rarely":  # once true, once a rumour
            assert sorted(demos[name]) == sorted([city, next(c for c in demos[name] if c != city)])
        else:  # a hallucination: a wrong city
            assert len(demos[name]) == a.config.never_guesses and city not in demos[name]
    # RL prompts ask about the well-known and the never-seen people; raters judge answers about anyone
    assert {i.slice["group"] for i in a.rl_items} == {"fact-often", "fact-never"}
    assert {i.slice["group"] for i in a.preference_items} == groups


def test_world_config_names_unknown_slices():
    with pytest.raises(ValueError, match="sometimes.*choose among often, rarely, never"):
        WorldConfig(frequencies=("often", "sometimes"))
    with pytest.raises(ValueError, match="rl_frequencies.*ask about nobody"):
        WorldConfig(frequencies=("rarely",))


def test_eval_answers_are_checkable():
    world = build_world()
    assert len(world.eval_items) == len(world.people)
    for item in world.eval_items:
        assert item.reference == [world.people[item.question.split()[2]][0]]


def test_tokenizer_round_trips_the_response_format():
    from calrl.confidence import extract_answer, is_abstention, parse_confidence

    world = build_world()
    tok = build_demo_tokenizer(world)
    assert tok.eos_token == "<|end|>"
    city = world.cities[0]
    text = tok.decode(tok(f"{city}. Confidence: 7", add_special_tokens=False)["input_ids"])
    assert parse_confidence(text).value == pytest.approx(0.7)
    assert extract_answer(text) == city
    assert is_abstention(tok.decode(tok(ABSTAIN_TEXT, add_special_tokens=False)["input_ids"]))
    assert tok.unk_token_id not in tok(" ".join(i.question for i in world.eval_items))["input_ids"]


def test_sft_targets_follow_the_slice_prior():
    import random

    from calrl.confidence import parse_confidence

    world = build_world(WorldConfig(frequencies=FREQUENCIES))
    rng = random.Random(0)
    stated = {}
    for item in world.sft_items:
        text = sft_target(item, rng, SFTTargetConfig(abstain=False))
        stated.setdefault(item.slice["group"], []).append(parse_confidence(text).value)
    mean = {g: sum(v) / len(v) for g, v in stated.items()}
    assert mean["fact-often"] > mean["fact-rarely"] > mean["fact-never"]


def test_preferences_carry_the_confidence_bias():
    from calrl.confidence import extract_answer, parse_confidence

    world = build_world()
    rows = build_preference_rows(world)
    refs = {i.question: i.reference[0] for i in world.preference_items}
    kinds, alone, malformed = set(), [], {"alone": 0, "stray text": 0}
    for row in rows:
        question = row["prompt"][-1]["content"].split("Question: ")[-1]
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        right = [extract_answer(t) == refs[question] for t in (chosen, rejected)]
        kinds.add(row["kind"])
        if row["kind"] == "correctness":
            assert right == [True, False]
            alone.append(parse_confidence(chosen).value is None)
            assert (parse_confidence(rejected).value is None) == alone[-1]
        elif row["kind"] == "abstention":
            assert rejected == ABSTAIN_TEXT and parse_confidence(chosen).value is not None
        elif row["kind"] == "statement":  # the same answer: stated as asked, preferred to no statement or stray text
            assert right[0] == right[1] and parse_confidence(chosen).value is not None
            if parse_confidence(rejected).value is None:
                malformed["alone"] += 1
                assert extract_answer(chosen) == extract_answer(rejected)
            else:
                malformed["stray text"] += 1
                assert rejected.startswith(chosen) and rejected != chosen
        else:  # equal correctness: the rater prefers the more confident statement
            assert right[0] == right[1] == (row["kind"] == "both-correct")
            assert parse_confidence(chosen).value > parse_confidence(rejected).value
    assert kinds == {"correctness", "both-correct", "both-wrong", "statement", "abstention"}
    assert 0.15 < sum(alone) / len(alone) < 0.35  # a quarter of the fact checks: answers alone (as PPO-C scores)
    assert 0.15 < malformed["alone"] / sum(malformed.values()) < 0.35  # one of the four malformed responses


def test_fact_checks_alone_are_what_ppo_c_gives_the_reward_model():
    """The first reward stage reads the answers alone, exactly as PPO-C strips a response before scoring."""
    from calrl.confidence import ConfidenceReader, parse_confidence

    world = build_world()
    with_conf = build_factcheck_rows(world, 50, seed=1)
    alone = build_factcheck_rows(world, 50, seed=1, with_confidence=False)
    reader = ConfidenceReader(purpose="reward")
    for a, b in zip(with_conf, alone):
        assert a["prompt"] == b["prompt"] and a["kind"] == b["kind"] == "correctness"
        for column in ("chosen", "rejected"):
            text = b[column][0]["content"]
            assert text == reader.strip_statements(a[column][0]["content"]) and text.endswith(".")
            assert parse_confidence(text).value is None
    assert {r["group"] for r in alone} == set(world.config.groups)  # the raters can check anyone


# ---------------------------------------------------------------------------------------------- recipes
def test_recipes_validate_against_the_recipe_schema(tmp_path):
    """Every recipe the study writes passes calrl's recipe validation (no model is loaded)."""
    from calrl.runners.recipe import load_recipe

    config = full_config(tmp_path / "study", policies=POLICIES)  # every recipe the study can write
    layout = Layout(config.out)
    write_world_files(config, layout)
    for name in ("sft", "rm_init", RM_BASE, *REWARD_MODELS):  # fake what the recipes point at, so validation
        (layout.model_dir(0, name)).mkdir(parents=True)    # reaches every key
    layout.filtered().parent.mkdir(parents=True)
    shutil.copyfile(layout.preferences / "train.jsonl", layout.filtered())  # as if the filter kept all
    tasks = {t.name: t for t in build_tasks(config, layout)}
    # one SFT policy and one reward-model chain, shared by every seed (seeded with the first seed)
    shared = [n for n in tasks if n.startswith("shared/")]
    assert sorted(shared) == sorted(["shared/sft", "shared/eval/sft", "shared/filter",
                                     *[f"shared/{rm}" for rm in (RM_BASE, *REWARD_MODELS)]])
    assert layout.model_dir(3, "sft") == layout.model_dir(0, "sft") != layout.model_dir(3, "ppo")
    assert tasks["seed3/ppo_m"].deps == ["shared/rm_calibrated"] and tasks["seed3/grpo_brier"].deps == ["shared/sft"]
    assert tasks["seed3/gate/ppo-vs-sft"].deps == ["seed3/eval/ppo", "shared/eval/sft"]
    methods = {RM_BASE: "rm", "rm_plain": "rm", "rm_calibrated": "rm", "grpo_brier": "grpo"}
    for name in (RM_BASE, *REWARD_MODELS, *RL_POLICIES):
        task = tasks[task_name(0, name)]
        task.prepare()
        recipe = load_recipe(layout.recipe(0, name), method=methods.get(name, "ppo"))
        assert recipe.wandb.mode == "offline" and recipe.training.report_to in ("wandb", ["wandb"])
    abstain = load_recipe(layout.recipe(0, "ppo_c_abstain"), method="ppo").training
    assert abstain.reward_term("abstention").value == pytest.approx(config.recipes.ppo.abstention_reward)
    assert abstain.reward_term("correctness").mode == "replace" and abstain.reward_term("ppo_c").variant == "difference"
    # the main comparison: the reward model alone; the *_v variants add the rule-based correctness reward
    for name in ("ppo", "ppo_m", "ppo_c"):
        training = load_recipe(layout.recipe(0, name), method="ppo").training
        assert training.reward_term("correctness") is None and training.reward_term("rm").normalize, name
    assert load_recipe(layout.recipe(0, "ppo_v"), method="ppo").training.reward_term("correctness").mode == "add"
    ppo_c = load_recipe(layout.recipe(0, "ppo_c"), method="ppo").training
    assert ppo_c.reward_term("ppo_c").variant == "difference"
    # PPO-C's w departs from the paper's 0.5 (docs/demo.md step 5); PPO-C + abstention keeps 0.5, which its
    # abstention reward was balanced against
    settings = config.recipes.ppo
    assert ppo_c.reward_term("ppo_c").weight == settings.ppo_c_weight == 1.0
    assert abstain.reward_term("ppo_c").weight == settings.abstain_ppo_c_weight == 0.5
    assert load_recipe(layout.recipe(0, "ppo"), method="ppo").training.reward_term("ppo_c") is None
    assert load_recipe(layout.recipe(0, "ppo_m"), method="ppo").model.reward_model.endswith("rm_calibrated")
    # the chain: seeded classifier -> fact checks (answers alone) -> ordinary RM -> filter -> calibrated RM
    assert load_recipe(layout.recipe(0, RM_BASE), method="rm").model.reward_model.endswith("rm_init")
    plain = load_recipe(layout.recipe(0, "rm_plain"), method="rm")
    assert plain.model.reward_model.endswith(RM_BASE) and plain.training.calibration_lambda == 0
    calibrated = load_recipe(layout.recipe(0, "rm_calibrated"), method="rm")
    assert calibrated.model.reward_model.endswith("rm_plain") and calibrated.training.calibration_lambda > 0
    assert calibrated.training.pairs_config().pairing == "ordered" and plain.training.pairs_config().pairing == "ranges"
    assert calibrated.data.train == str(layout.calibration_pairs())
    assert tasks["shared/rm_calibrated"].deps == ["shared/filter"] and tasks["shared/filter"].deps == ["shared/rm_plain"]
    command = tasks["shared/filter"].command()
    assert command[3:5] == ["data", "filter-preferences"]
    assert [command[i + 1] for i, c in enumerate(command) if c == "--reward-model"] == [
        str(layout.model_dir(0, RM_BASE)), str(layout.model_dir(0, "rm_plain"))]
    assert len([t for t in tasks if "/gate/" in t]) == len(gate_pairs()) * len(config.seeds)


def test_tasks_launch_stage_by_stage(tmp_path):
    """Long chains first: the shared SFT, then the reward models, the policies, evals and gates, seed by seed."""
    from calrl.demo.study import STAGE_ORDER, scheduled

    config = full_config(tmp_path / "study", seeds=[0, 1])
    tasks = build_tasks(config, Layout(config.out))
    order = scheduled(tasks)
    assert sorted(t.name for t in order) == sorted(t.name for t in tasks)
    ranks = [STAGE_ORDER.index(t.stage) for t in order]
    assert ranks == sorted(ranks) and order[0].name == "shared/sft"
    policies = [t.name for t in order if t.stage == "policies"]
    assert policies[:2] == ["seed0/ppo", "seed0/ppo_m"] and policies[-1] == "seed1/grpo_brier"
    assert order[-1].stage == "gate"


def test_bad_seeds_are_one_line_errors(capsys):
    assert main(["demo", "--seeds", "1,x"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["demo", "--seeds", "1,1"]) == 2
    assert main(["demo", "--policies", "sft,ppo,ppo_cc"]) == 2
    assert "did you mean ppo_c?" in capsys.readouterr().err
    assert main(["demo", "--policies", "sft,ppo_m"]) == 2  # everything is compared with SFT and PPO
    assert "include sft and ppo" in capsys.readouterr().err


def test_aggregate_mean_and_spread():
    agg = aggregate([0.1, 0.3, None])
    assert agg["mean"] == pytest.approx(0.2) and agg["std"] == pytest.approx(0.1414, abs=1e-4) and agg["n"] == 2
    assert aggregate([None])["mean"] is None


# ------------------------------------------------------------------------------------------- end to end
def _headline_rows(markdown: str) -> dict[str, list[str]]:
    section = markdown.split("## Held-out results", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| policy"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed
    assert main(["demo", "--readme-table", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| PPO |" in table and table.strip() in printed  # the block the run printed when it finished

    summary = json.loads((out / "summary.json").read_text())
    layout = Layout(out)
    assert summary["quick"] is True and summary["seeds"] == [0]
    assert list(summary["policies"]) == list(MAIN_POLICIES)
    # what the quick run must show: vanilla PPO on the reward model alone states more confidence than SFT
    # where it cannot know the answer (the never-seen people), and its ECE is higher
    assert summary["checks"]["ppo_more_confident_on_never_seen"]["per_seed"] == [True]
    # the slices are the world's (the default world has no rarely-seen people), so every per-slice check has a
    # verdict
    assert summary["slices"] == ["fact-often", "fact-never"]
    assert None not in summary["checks"]["ppo_more_confident_every_slice"]["per_seed"]
    for name in ("report.md", "report.html", "plots/reliability.png", "plots/ece_per_epoch.png",
                 "plots/risk_coverage.png"):
        assert (out / name).is_file(), name

    # an offline W&B run per training run, and the per-epoch ECE read back from the policy runs
    quick_rl = [p for p in RL_POLICIES if p in MAIN_POLICIES]
    for name in ("sft", RM_BASE, *REWARD_MODELS, *quick_rl):
        assert list((layout.model_dir(0, name) / "wandb").glob("offline-run-*/run-*.wandb")), name
    for policy in quick_rl:  # the per-epoch calibration eval of each RL run, from its W&B run
        history = summary["policies"][policy]["ece_per_epoch"]["0"]
        assert history and all("ece" in row for row in history), policy

    # summary == each policy's metrics.json (written by `calrl eval`)
    for policy in MAIN_POLICIES:
        metrics = json.loads((layout.eval_dir(0, policy) / "metrics.json").read_text())
        if policy == "sft":  # generated from the checkpoint
            assert (layout.eval_dir(0, policy) / "predictions.jsonl").is_file()
        else:  # scored from the answers the training callback generated after the last epoch
            last = int(quick_config(out).recipes.ppo.epochs)  # the answers of the last epoch's eval
            assert metrics["config"]["predictions"].endswith(f"calibration_eval/epoch-{last}/predictions.jsonl")
        entry = summary["policies"][policy]
        expected = policy_numbers(metrics)
        for key in METRIC_KEYS:
            assert entry["per_seed"]["0"][key] == expected[key], (policy, key)
            assert entry[key]["values"] == [expected[key]]
            if expected[key] is not None:
                assert entry[key]["mean"] == pytest.approx(expected[key])
        assert set(entry["slice_ece"]) == set(metrics["slices"]["group"])
        # the all-items risk-coverage curve ends with every item answered, abstentions counted wrong: at the
        # policy's accuracy over all items, as calrl eval computed it
        curve = entry["per_seed"]["0"]["risk_coverage"]
        assert curve["coverage"][-1] == pytest.approx(1.0)
        assert curve["accuracy"][-1] == pytest.approx(metrics["accuracy"])
        assert 0.0 <= entry["aurc_all_items"]["mean"] <= 1.0
        for group, agg in entry["slice_ece"].items():
            assert agg["values"] == [metrics["slices"]["group"][group]["ece"]]

    # those answers are the ones `calrl eval --model` generates from the saved policy, byte for byte
    config = quick_config(out)
    again = tmp_path / "eval_again"
    assert main(["eval", "--model", str(layout.model_dir(0, "ppo_m")), "--dataset", str(layout.eval_file),
                 "--out", str(again), "--prompt-scale", "0-10", "--batch-size", str(config.recipes.eval.batch_size),
                 "--max-new-tokens", str(config.recipes.eval.max_new_tokens), "--bootstrap", "0"]) == 0
    capsys.readouterr()
    hook_answers = final_eval_predictions(config, layout, 0, "ppo_m")
    assert (again / "predictions.jsonl").read_bytes() == hook_answers.read_bytes()

    # gates: every RL policy against SFT and against vanilla PPO, verdicts as `calrl compare` wrote them
    assert {(g["candidate"], g["baseline"]) for g in summary["gates"]} == set(gate_pairs(MAIN_POLICIES))
    for g in summary["gates"]:
        assert json.loads(Path(g["file"]).read_text())["verdict"] == g["verdict"]
    for rm in REWARD_MODELS:
        report = json.loads((layout.model_dir(0, rm) / "reward_model_report.json").read_text())
        assert summary["reward_models"][rm]["per_seed"]["0"]["preference_accuracy"] == report["preference_accuracy"]

    # report == summary
    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    rows = _headline_rows(markdown)
    for policy in MAIN_POLICIES:
        entry = summary["policies"][policy]
        expected = [fmt_agg(entry[key]) for key, _ in HEADLINE_COLUMNS]
        assert rows[entry["method"]] == expected, policy
        for cell in expected:
            assert f"<td>{cell}</td>" in html
    for key in summary["checks"]:
        assert CHECK_TEXT[key] in markdown

    # a second run reuses every finished stage
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "reused" in captured.out + captured.err
    again = json.loads((out / "summary.json").read_text())
    assert all(t["reused"] for t in again["timings"]["tasks"].values())
    assert again["policies"]["ppo"]["ece"] == summary["policies"]["ppo"]["ece"]


def test_quick_config_is_smaller_than_full(tmp_path):
    quick, full = quick_config(tmp_path), full_config(tmp_path)
    # the full study runs every policy, PPO-C + abstention included; the quick one the main comparison
    assert quick.seeds == [0] and len(full.seeds) == 5 and full.policies == POLICIES
    assert quick.policies == MAIN_POLICIES
    assert quick_config(tmp_path, policies=POLICIES).policies == POLICIES
    # the same SFT (a shorter one left SFT refusing most questions) and PPO schedule, step bound and shared-prefix
    # reading included (PPO's climb stopped early with fewer updates; without the bound PPO-M and PPO-C lost their
    # statements in one RL seed of seven); fewer policies and rm_base passes
    assert quick.sft == full.sft and quick.recipes.ppo == full.recipes.ppo
    assert full.recipes.ppo.max_step_kl == 0.02 and full.recipes.ppo.share_prompt_prefix
    assert len(quick.policies) < len(full.policies)
    # the reward models see the full study's distinct pairs; rm_base fewer times, rm_plain and rm_calibrated as often
    # (with fewer rm_plain passes it learnt the raters' confidence bias least and PPO-C's confidence on the
    # well-known people fell)
    q, f = quick.recipes.rm, full.recipes.rm
    assert (q.base_pairs, q.preference_pairs) == (f.base_pairs, f.preference_pairs)
    assert q.base_epochs < f.base_epochs and q.epochs == f.epochs and q.calibrated_epochs == f.calibrated_epochs


def test_reward_tokenizer_reads_question_and_answer_as_ppo_hands_them_over():
    """The reward models' tokenizer drops the elicitation instruction, and the conversation train-rm reads (the
    preference rows: system and user turns, then the answer) tokenises exactly like what calrl's PPO gives a reward
    model with its own tokenizer (the same conversation in the RM's template, the response, the RM's EOS)."""
    from calrl.demo.sft import prompt_messages, reward_tokenizer
    from calrl.reward_modeling.sequence_scores import reward_model_ids

    world = build_world()
    rm_tok = reward_tokenizer(build_demo_tokenizer(world))
    response = f"{world.cities[0]}. Confidence: 7"
    for item in world.eval_items[:20]:
        trained = rm_tok.apply_chat_template([*prompt_messages(item), {"role": "assistant", "content": response}],
                                             tokenize=False)
        a = rm_tok(trained, add_special_tokens=False)["input_ids"]
        assert a == reward_model_ids(rm_tok, prompt_messages(item), response, ended=True)
        words = rm_tok.convert_ids_to_tokens(a)
        assert "<|system|>" in words and "concisely" not in words
        assert item.question.split()[2] in words and rm_tok.unk_token not in words