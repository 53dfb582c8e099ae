"""``calrl eval`` end to end on files the tests write: outputs, report numbers, bad input, atomicity."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from calrl.cli.main import main
from calrl.data.records import PredictionRecord
from calrl.eval.report import fmt, lookup

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = {"metrics.json", "reliability.png", "report.md", "report.html", "resolved.jsonl", "samples.jsonl"}


def make_rows(n: int = 80) -> list[dict]:
    """Deterministic overconfident predictions: answers right on 3 of 5 items, stated 8-10."""
    rows = []
    for i in range(n):
        right = i % 5 < 3
        answer = "42" if right else str(40 + i % 7)
        row = {"id": f"q{i}", "reference": "42", "slice": {"domain": ["math", "logic"][i % 2],
                                                            "size": "tiny" if i < 6 else "big"}}
        if i % 17 == 0:
            row["response"] = "I don't know."
        elif i % 11 == 0:
            row["response"] = f"Probably {answer}."
        else:
            row["response"] = f"The answer is {answer}. Confidence: {8 + i % 3}"
        if i % 4 == 0:
            row["samples"] = [answer, "42", "41"]
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_eval(*args: str) -> int:
    return main(["eval", *args])


def test_eval_end_to_end(tmp_path, capsys):
    preds = write_jsonl(tmp_path / "preds.jsonl", make_rows())
    out = tmp_path / "out"
    assert run_eval("--predictions", str(preds), "--out", str(out), "--bootstrap", "30") == 0
    assert {p.name for p in out.iterdir()} == OUTPUTS
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind

    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 80 and m["n_abstained"] == 5  # i = 0, 17, 34, 51, 68
    assert m["confidence_sources"]["hedge"] > 0 and m["confidence_sources"]["explicit"] > 0
    assert m["mean_confidence"] > m["accuracy_answered"]  # overconfident by construction
    assert m["slices"]["size"]["tiny"]["small"] is True and m["slices"]["size"]["big"]["small"] is False
    assert m["consistency"]["n_items"] > 0
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stdout = capsys.readouterr().out
    assert "ECE" in stdout and fmt(m["ece"]) in stdout and "report.html" in stdout


def test_report_numbers_equal_metrics_json(tmp_path):
    preds = write_jsonl(tmp_path / "preds.jsonl", make_rows())
    out = tmp_path / "out"
    assert run_eval("--predictions", str(preds), "--out", str(out), "--bootstrap", "20") == 0
    m = json.loads((out / "metrics.json").read_text())
    md = (out / "report.md").read_text()

    summary = re.findall(r"^\| [^|]+ \| `([a-z_.]+)` \| ([^|]+) \|", md, flags=re.MULTILINE)
    keys = {k for k, _ in summary}
    assert {"n", "accuracy", "ece", "smece.value", "brier", "auroc", "aurc", "refusal_rate"} <= keys
    for key, shown in summary:
        value = lookup(m, key)
        if value is None:
            assert shown.strip() == "n/a"
        else:
            assert float(shown) == pytest.approx(round(value, 4), abs=0), key

    slice_rows = re.findall(r"^\| (domain|size) \| (\w+) \| (small|) \| (\d+) \| ([^|]+) \| [^|]+ \| ([^|]+) \|",
                            md, flags=re.MULTILINE)
    assert len(slice_rows) == 4
    for key, value, flag, n, acc, ece in slice_rows:
        s = m["slices"][key][value]
        assert int(n) == s["n"] and (flag == "small") == s["small"]
        assert float(acc) == round(s["accuracy"], 4)
        assert ece.strip() == fmt(s["ece"])

    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="reliability.png"' not in html
    assert fmt(m["ece"]) in html
    assert "![Reliability diagram](reliability.png)" in md


def test_csv_input_and_options(tmp_path):
    preds = tmp_path / "preds.csv"
    lines = ["id,correct,confidence,slice"]
    lines += [f"c{i},{'true' if i % 3 else 'false'},{(i % 10) / 10 if i % 7 else ''},s{i % 2}" for i in range(50)]
    preds.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert run_eval("--predictions", str(preds), "--out", str(out), "--bins", "10", "--missing-confidence",
                    "half", "--min-slice-size", "30", "--bootstrap", "0", "--seed", "5") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["reliability"]) == 10 and m["missing_confidence"] == {"count": 8, "policy": "half"}
    assert m["n_scored"] == 50 and m["slices"]["slice"]["s0"]["small"] is True
    assert m["settings"] == {"n_bins": 10, "missing_policy": "half", "min_slice_size": 30, "n_boot": 0,
                             "seed": 5}


def test_sample_file_shipped_in_repo(tmp_path):
    sample = REPO / "evals" / "samples" / "overconfident_model.jsonl"
    out = tmp_path / "out"
    assert run_eval("--predictions", str(sample), "--out", str(out), "--bootstrap", "20") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] >= 300 and m["n_abstained"] > 0 and m["mean_confidence"] > m["accuracy_answered"]
    assert set(m["slices"]) == {"domain", "difficulty"} and "consistency" in m


BAD_INPUTS = [
    ("missing.jsonl", None, "file not found"),
    ("bad.jsonl", '{"id": "a", "response": "x", "reference": "x"}\n{"id": \n', "bad.jsonl:2: malformed JSON"),
    ("dup.jsonl", '{"id": "a", "response": "x"}\n{"id": "a", "response": "y"}\n',
     "dup.jsonl:2: field 'id': duplicate id 'a' (lines 1 and 2)"),
    ("range.jsonl", '{"id": "a", "response": "x", "confidence": 1.7}\n',
     "range.jsonl:1: field 'confidence': 1.7 is outside [0, 1]"),
    ("empty.jsonl", "", "empty.jsonl: no predictions in the file (empty input)"),
    ("noid.jsonl", '{"response": "x"}\n', "noid.jsonl:1: field 'id': missing"),
    ("nothing.jsonl", '{"id": "a", "reference": "x"}\n', "nothing.jsonl:1: neither 'response' nor"),
    ("noref.jsonl", '{"id": "a", "response": "Paris. Confidence: 8"}\n', "id 'a': no 'reference' to grade the response against"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, name, content, message):
    preds = tmp_path / name
    if content is not None:
        preds.write_text(content)
    out = tmp_path / "out"
    assert run_eval("--predictions", str(preds), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("calrl eval: error: ") and message in err
    assert not out.exists() or not any(out.iterdir())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_policy_error_via_cli(tmp_path, capsys):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "response": "42. Confidence: 9", "reference": "42"},
                                               {"id": "b", "response": "The answer is 42.", "reference": "42"}])
    out = tmp_path / "out"
    assert run_eval("--predictions", str(preds), "--out", str(out), "--missing-confidence", "error") == 2
    assert "id 'b' has no confidence" in capsys.readouterr().err
    assert not out.exists()


def test_failure_while_writing_leaves_no_partial_output(tmp_path, capsys, monkeypatch):
    from calrl.errors import InputError
    from calrl.eval import run

    def broken(*args, **kwargs):
        raise InputError("disk full (simulated)")

    monkeypatch.setattr(run, "write_report", broken)  # where run_eval looks it up
    preds = write_jsonl(tmp_path / "p.jsonl", make_rows(20))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier file")
    assert run_eval("--predictions", str(preds), "--out", str(out), "--bootstrap", "0") == 2
    assert "disk full (simulated)" in capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"keep.txt"}  # no metrics.json or png from the failed run


def test_predictions_inside_out_dir_are_not_rewritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    preds = write_jsonl(out / "predictions.jsonl", make_rows(20))
    before = preds.read_bytes()
    # a folder holding the input is refused unless --overwrite; then the input itself is kept
    assert run_eval("--predictions", str(preds), "--out", str(out), "--bootstrap", "0") == 2
    assert "holds this command's input" in capsys.readouterr().err and os.listdir(out) == ["predictions.jsonl"]
    assert run_eval("--predictions", str(preds), "--out", str(out), "--bootstrap", "0", "--overwrite") == 0
    assert preds.read_bytes() == before and OUTPUTS <= {p.name for p in out.iterdir()}
    # an input named like an output eval writes (resolved.jsonl) is refused even with --overwrite
    resolved = out / "resolved.jsonl"
    kept = resolved.read_bytes()
    assert run_eval("--predictions", str(resolved), "--out", str(out), "--overwrite") == 2
    assert "would overwrite this command's input" in capsys.readouterr().err and resolved.read_bytes() == kept


def test_predictions_and_model_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--predictions", "a.jsonl", "--model", "m", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert run_eval("--predictions", "a.jsonl", "--dataset", "gsm8k", "--out", str(tmp_path / "o")) == 2
    assert run_eval("--model", "m", "--out", str(tmp_path / "o")) == 2
    assert "--model needs --dataset" in capsys.readouterr().err


def test_model_path_forwards_options_and_writes_predictions(tmp_path, monkeypatch, capsys):
    """The generation path's plumbing, with the generator replaced by a recorder (real one: checkpoint tests)."""
    calls = {}

    def fake_predict(**kwargs):
        calls.update(kwargs)
        return [PredictionRecord(id=f"g{i}", response=f"The answer is {i % 2}. Confidence: {5 + i % 5}",
                                 reference=["1"]) for i in range(12)]

    monkeypatch.setattr("calrl.eval.run.predict_from_checkpoint", fake_predict)  # the generator, replaced
    prompts = pytest.importorskip("calrl.generation.prompts")
    out = tmp_path / "out"
    assert run_eval("--model", "tiny-model", "--adapter", "lora", "--dataset", "gsm8k", "--split", "test",
                    "--limit", "12", "--prompt-scale", "percent", "--reasons-first", "--batch-size", "4",
                    "--max-new-tokens", "20", "--num-samples", "3", "--temperature", "0.7",
                    "--out", str(out), "--bootstrap", "0") == 0
    assert calls["model"] == "tiny-model" and calls["adapter"] == "lora" and calls["dataset"] == "gsm8k"
    assert (calls["split"], calls["limit"], calls["batch_size"], calls["max_new_tokens"]) == ("test", 12, 4, 20)
    assert (calls["num_samples"], calls["temperature"]) == (3, 0.7)
    assert isinstance(calls["prompt"], prompts.ElicitationPrompt)
    assert (calls["prompt"].scale, calls["prompt"].reasons_first, calls["prompt"].distractor) == \
        ("percent", True, False)
    assert OUTPUTS | {"predictions.jsonl"} == {p.name for p in out.iterdir()}
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 12 and json.loads(lines[1])["id"] == "g1"
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 12 and m["accuracy"] == pytest.approx(6 / 12)


def test_model_path_with_a_tiny_local_model(tmp_path):
    """Real generation: a tiny random Qwen2 saved locally, questions from a local JSONL file."""
    pytest.importorskip("calrl.generation.checkpoint")
    from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer, save_pretrained

    questions = [{"id": f"t{i}", "question": f"What is {i} plus {i}?", "reference": str(2 * i),
                  "slice": {"size": "small" if i < 2 else "large"}} for i in range(5)]
    qfile = write_jsonl(tmp_path / "questions.jsonl", questions)
    tok = build_word_tokenizer([q["question"] for q in questions] + ["Confidence: 8", "I don't know"])
    model_dir = save_pretrained(build_tiny_causal_lm(tok), tok, tmp_path / "tiny")
    out = tmp_path / "out"
    assert run_eval("--model", str(model_dir), "--dataset", str(qfile), "--limit", "4", "--batch-size", "2",
                    "--max-new-tokens", "6", "--out", str(out), "--bootstrap", "0") == 0
    assert OUTPUTS | {"predictions.jsonl"} == {p.name for p in out.iterdir()}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["t0", "t1", "t2", "t3"] and all(isinstance(r["response"], str) for r in rows)
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 4 and m["slices"]["size"]["small"]["n"] == 2


def test_no_hedges_and_grader_flags(tmp_path):
    rows = [{"id": f"h{i}", "response": f"Probably {i % 3}.", "reference": "1"} for i in range(12)]
    preds = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    assert run_eval("--predictions", str(preds), "--out", str(out), "--no-hedges", "--grader", "numeric",
                    "--bootstrap", "0") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["confidence_sources"]["hedge"] == 0 and m["missing_confidence"]["count"] == 12
    assert m["n_scored"] == 0 and m["ece"] is None and m["accuracy"] == pytest.approx(4 / 12)
    assert m["hedged_error_rate"] == 1.0  # every wrong answer hedged in words
    assert "| ECE | `ece` | n/a |" in (out / "report.md").read_text()

    out2 = tmp_path / "out2"
    assert run_eval("--predictions", str(preds), "--out", str(out2), "--bootstrap", "0") == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["confidence_sources"]["hedge"] == 12 and m2["n_scored"] == 12


def test_all_abstained_still_reports(tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": str(i), "response": "I don't know."} for i in range(5)])
    out = tmp_path / "out"
    assert run_eval("--predictions", str(preds), "--out", str(out), "--bootstrap", "0") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["refusal_rate"] == 1.0 and m["reliability"] == []
    assert OUTPUTS == {p.name for p in out.iterdir()}


def test_overlay_plot_and_label_check(tmp_path):
    from calrl.data.records import ResolvedRecord
    from calrl.eval.plots import plot_reliability
    from calrl.eval.runner import compute_metrics

    def metrics(shift: float) -> dict:
        recs = [ResolvedRecord(id=str(i), abstained=False, correct=i % 3 != 0,
                               confidence=min(1.0, (i % 10) / 10 + shift), confidence_source="given", hedged=False)
                for i in range(60)]
        return compute_metrics(recs, n_boot=0)

    path = tmp_path / "both.png"
    plot_reliability([metrics(0.0), metrics(0.3)], path, labels=["baseline", "candidate"])
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="2 labels for 1 runs"):
        plot_reliability([metrics(0.0)], tmp_path / "x.png", labels=["a", "b"])
    assert not (tmp_path / "x.png").exists()
