"""What ``calrl eval`` writes for reproduction and reading: metrics.json's config and versions blocks and
its typed schema, samples.jsonl, resolved.jsonl, the report's model, verdict and confidently wrong answers."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from calrl.cli.main import main
from calrl.data.records import PredictionRecord, ResolvedRecord
from calrl.errors import InputError
from calrl.eval.report import confidently_wrong, verdict
from calrl.eval.runner import compute_results
from calrl.eval.schema import EvalResults, collect_versions, git_hash, lookup

REPO = Path(__file__).resolve().parents[1]


def rows(n: int = 40) -> list[dict]:
    out = []
    for i in range(n):
        right = i % 4 != 0
        answer = "7" if right else str(10 + i)
        out.append({"id": f"q{i}", "question": f"what is {i}?", "reference": "7",
                    "response": f"The answer is {answer}. Confidence: {6 + i % 5}",
                    "slice": {"domain": "a" if i % 2 else "b"}})
    return out


def write(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_predictions_eval_writes_config_versions_and_samples(tmp_path):
    preds = write(tmp_path / "preds.jsonl", rows())
    out = tmp_path / "out"
    assert main(["eval", "--predictions", str(preds), "--out", str(out), "--bootstrap", "0", "--bins", "10",
                 "--missing-confidence", "half", "--grader", "numeric"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    given = {k: v for k, v in m["config"].items() if v is not None}
    assert given == {"predictions": str(preds), "missing_confidence": "half", "grader": "numeric",
                     "confidence_parser": "calrl", "use_hedges": True, "bins": 10}
    # provenance: when, how long, and the content hash of the file read
    p = m["provenance"]
    assert p["inputs"] == {str(preds): "sha256:" + hashlib.sha256(preds.read_bytes()).hexdigest()}
    assert datetime.datetime.fromisoformat(p["date"]).tzinfo is not None and 0 < p["duration_s"] < 600
    assert {"model", "adapter", "dataset", "split", "limit", "sample_seed", "generation"} <= set(m["config"])
    v = m["versions"]
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))
    assert v["torch"] and v["transformers"] and v["calrl"]
    if (REPO / ".git").exists():
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout
        assert v["git_hash"].split("+")[0] == head.strip()
    # the keys the training callback, the demo and compare read are still there
    assert {"n", "accuracy", "accuracy_answered", "ece", "smece", "brier", "auroc", "refusal_rate",
            "mean_confidence", "missing_confidence", "reliability", "slices", "settings", "source"} <= set(m)
    assert m["slices"]["domain"]["a"]["n"] == 20 and "n_abstained" in m["slices"]["domain"]["a"]
    results = EvalResults.from_json(m, path="metrics.json")
    assert results.to_json() == m and results.config.grader == "numeric" and results.settings.n_bins == 10

    samples = read_jsonl(out / "samples.jsonl")
    assert [s["id"] for s in samples] == [r["id"] for r in rows()]
    first = samples[0]
    assert first["question"] == "what is 0?" and first["reference"] == ["7"] and first["answer"] == "10"
    assert first["correct"] is False and first["confidence"] == pytest.approx(0.6)
    assert first["confidence_source"] == "explicit" and first["prompt"] is None
    assert first["response"].startswith("The answer is 10")
    # lm-evaluation-harness' names beside calrl's
    assert [s["doc_id"] for s in samples] == list(range(len(samples)))
    assert first["resps"] == [[first["response"]]] and first["filtered_resps"] == [first["answer"]]
    assert first["target"] == first["reference"]
    resolved = read_jsonl(out / "resolved.jsonl")
    assert resolved[0]["response"] == first["response"] and resolved[0]["reference"] == ["7"]

    # calrl compare still reads the folders (exit 0 or 1 is a verdict; 2 would be bad input)
    assert main(["eval", "--predictions", str(preds), "--out", str(tmp_path / "out2"), "--bootstrap", "0"]) == 0
    assert main(["compare", "--baseline", str(out), "--candidate", str(tmp_path / "out2"),
                 "--out", str(tmp_path / "gate")]) in (0, 1)


def test_report_names_the_source_gives_a_verdict_and_the_confidently_wrong(tmp_path):
    preds = write(tmp_path / "preds.jsonl", rows())
    out = tmp_path / "out"
    assert main(["eval", "--predictions", str(preds), "--out", str(out), "--bootstrap", "0"]) == 0
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    m = json.loads((out / "metrics.json").read_text())
    line = verdict(m)
    assert line.startswith("Overconfident") and f"**{line}**" in md and "<strong>" in html
    assert f"Predictions: `{preds}`" in md
    section = md.split("## Most confidently wrong answers (top 10)")[1].split("## ")[0]
    shown = re.findall(r"^\| `(q\d+)` \| ([0-9.]+) \|", section, flags=re.MULTILINE)
    wrong = sorted((r for r in rows() if "answer is 7" not in r["response"]),
                   key=lambda r: (-int(r["response"].rsplit(" ", 1)[1]), r["id"]))
    assert [i for i, _ in shown] == [r["id"] for r in wrong[:10]]
    assert [float(c) for _, c in shown] == sorted((float(c) for _, c in shown), reverse=True)
    assert "`config.grader`" in md and "`versions.torch`" in md


def test_model_eval_records_model_prompt_and_generation(tmp_path, monkeypatch, capsys):
    calls = {}

    def fake_predict(**kwargs):
        calls.update(kwargs)
        return [PredictionRecord(id=f"g{i}", question=f"q{i}", prompt=f"<sys>ask</sys><user>q{i}</user>",
                                 response=f"The answer is {i % 2}. Confidence: {5 + i % 5}", reference=["1"],
                                 slice={"domain": "x"}) for i in range(12)]

    monkeypatch.setattr("calrl.eval.run.predict_from_checkpoint", fake_predict)  # the generator, replaced
    out = tmp_path / "out"
    assert main(["eval", "--model", "org/tiny-model", "--adapter", "runs/lora", "--dataset", "mmlu_professional_law",
                 "--limit", "12", "--sample-seed", "3", "--distractor", "--out", str(out), "--bootstrap", "0"]) == 0
    assert calls["sample_seed"] == 3 and calls["limit"] == 12
    m = json.loads((out / "metrics.json").read_text())
    c = m["config"]
    assert (c["model"], c["adapter"], c["dataset"], c["split"], c["limit"], c["sample_seed"]) == \
        ("org/tiny-model", "runs/lora", "mmlu_professional_law", None, 12, 3)
    assert (c["prompt_scale"], c["prompt_style"], c["reasons_first"], c["distractor"]) == ("0-10", "calrl", False, True)
    assert m["provenance"]["inputs"] == {}  # the set came from the hub (faked here): no local file to hash
    assert c["generation"] == {"batch_size": 16, "max_new_tokens": 64, "num_samples": 0, "temperature": 1.0,
                               "do_sample": False, "confidence_retries": 0, "retried_items": 0,
                               "retry_generations": 0, "top_k": 0, "seed": None, "retry_when": "parsed",
                               "forced_max_new_tokens": None}
    samples = read_jsonl(out / "samples.jsonl")
    assert samples[1]["prompt"] == "<sys>ask</sys><user>q1</user>" and samples[1]["correct"] is True
    assert read_jsonl(out / "predictions.jsonl")[0]["prompt"] == "<sys>ask</sys><user>q0</user>"
    md = (out / "report.md").read_text()
    assert md.startswith("# Calibration report: org/tiny-model + runs/lora")
    assert "Model: `org/tiny-model` with adapter `runs/lora`, on `mmlu_professional_law`" in md
    assert "stratified sample, seed 3" in md
    assert verdict(m) in capsys.readouterr().out


def test_legend_names_the_model_not_the_dataset(tmp_path, monkeypatch):
    from calrl.cli import eval_cmd
    from calrl.eval import plots

    seen = {}
    monkeypatch.setattr(plots, "render_reliability", lambda entries, labels=None, title=None: seen.update(
        labels=labels) or b"\x89PNG\r\n\x1a\n")
    monkeypatch.setattr("calrl.eval.run.predict_from_checkpoint", lambda **kw: [PredictionRecord(id="a", response="1. Confidence: 9",
                                                                  reference=["1"])])  # the generator, replaced
    assert main(["eval", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--dataset", "data/heldout.jsonl",
                 "--out", str(tmp_path / "o"), "--bootstrap", "0"]) == 0
    assert seen["labels"] == ["Qwen/Qwen2.5-0.5B-Instruct"]
    preds = write(tmp_path / "preds.jsonl", rows(4))
    assert main(["eval", "--predictions", str(preds), "--out", str(tmp_path / "p"), "--bootstrap", "0"]) == 0
    assert seen["labels"] == ["preds.jsonl"]
    assert eval_cmd.OUTPUT_NAMES[-1] == "samples.jsonl"


def test_list_datasets_prints_sets_and_aliases(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--list-datasets"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ("gsm8k", "mmlu_professional", "mmlu_professional_law", "truthfulqa_mc1",
                 "bbh_zeroshot_object_counting", "cais/mmlu"):
        assert name in text


def test_grader_by_module_function_and_bad_options(tmp_path, monkeypatch, capsys):
    (tmp_path / "graders_for_eval.py").write_text(
        "def always(answer, references, *, choices=None):\n    return True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    preds = write(tmp_path / "preds.jsonl", rows(8))
    out = tmp_path / "out"
    assert main(["eval", "--predictions", str(preds), "--out", str(out), "--bootstrap", "0",
                 "--grader", "graders_for_eval:always"]) == 0
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == 1.0
    capsys.readouterr()
    assert main(["eval", "--predictions", str(preds), "--out", str(tmp_path / "x"), "--grader", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown grader 'nope'" in err
    assert main(["eval", "--model", "m", "--dataset", "gsm8k", "--sample-seed", "1", "--out", str(tmp_path / "y")]) == 2
    assert "give --limit N too" in capsys.readouterr().err


def test_metrics_schema_names_a_malformed_key():
    m = compute_results([ResolvedRecord("a", False, True, 0.9, "given", False)], n_boot=0).to_json()
    with pytest.raises(InputError, match=r"m.json: .*'smece.value' must be"):
        EvalResults.from_json({**m, "smece": {"value": "high"}}, path="m.json")
    with pytest.raises(InputError, match=r"m.json: .*missing required key 'settings'"):
        EvalResults.from_json({k: v for k, v in m.items() if k != "settings"}, path="m.json")
    kept = EvalResults.from_json({**m, "training": {"epoch": 2}})
    assert kept.extra == {"training": {"epoch": 2}} and kept.to_json()["training"] == {"epoch": 2}
    assert lookup(kept, "smece.value") == lookup(m, "smece.value") and lookup(kept, "nope.x") is None


def _resolved(pairs: list[tuple[bool, float | None]]) -> list[ResolvedRecord]:
    return [ResolvedRecord(f"i{k}", False, ok, conf, "given" if conf is not None else "missing", False)
            for k, (ok, conf) in enumerate(pairs)]


def test_verdict_reads_the_numbers():
    calibrated = _resolved([(k % 10 < 7, 0.7) for k in range(100)])
    assert verdict(compute_results(calibrated, n_boot=0)).startswith("Well calibrated")
    under = _resolved([(k % 10 < 9, 0.5) for k in range(100)])
    line = verdict(compute_results(under, n_boot=0))
    assert line.startswith("Underconfident") and "0.50 against accuracy 0.90" in line
    over = _resolved([(k % 2 == 0, 0.95) for k in range(100)])
    assert "100% of wrong answers stated 0.9 or more" in verdict(compute_results(over, n_boot=0))
    none = _resolved([(True, None), (False, None)])
    assert verdict(compute_results(none, n_boot=0)).startswith("No verdict")


def test_confidently_wrong_orders_by_confidence_then_id():
    recs = _resolved([(False, 0.6), (True, 0.99), (False, 0.9), (False, None), (False, 0.9)])
    assert [r.id for r in confidently_wrong(recs, k=3)] == ["i2", "i4", "i0"]


def test_versions_without_a_checkout(tmp_path):
    assert git_hash(tmp_path) is None
    assert collect_versions().torch is not None
