"""``calrl recalibrate fit`` / ``apply`` end to end on files the tests write."""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
from pathlib import Path

import pytest

from calrl.cli.main import main

METHODS = ("temperature", "platt", "isotonic", "histogram")


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def overconfident_rows(n: int, seed: int = 0, sharpen: float = 3.0) -> list[dict]:
    """True P(correct) p; stated confidence sigmoid(sharpen * logit p): too sure both ways.

    Every row carries extra fields that apply must keep; every 10th item is an abstention.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 10 == 0:
            rows.append(
                {
                    "id": f"q{i}",
                    "question": f"question {i}",
                    "response": "I don't know.",
                    "abstained": True,
                    "meta": {"k": i},
                    "slice": {"domain": "x"},
                }
            )
            continue
        p = rng.uniform(0.05, 0.95)
        stated = round(sigmoid(sharpen * math.log(p / (1 - p))), 2)
        rows.append(
            {
                "id": f"q{i}",
                "question": f"question {i}",
                "response": f"answer {i}. Confidence: {round(stated * 100)}%",
                "correct": rng.random() < p,
                "confidence": stated,
                "meta": {"k": i},
                "slice": {"domain": "x" if i % 2 else "y"},
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def preds_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "preds.jsonl", overconfident_rows(1500))


@pytest.mark.parametrize("method", METHODS)
def test_fit_lowers_holdout_ece_and_apply_never_changes_answers(method, preds_file, tmp_path, capsys):
    cal_path = tmp_path / "cal" / "calibrator.json"
    assert (
        main(
            [
                "recalibrate",
                "fit",
                "--predictions",
                str(preds_file),
                "--method",
                method,
                "--out",
                str(cal_path),
                "--holdout-fraction",
                "0.3",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    doc = json.loads(cal_path.read_text())
    assert doc["method"] == method
    n_scored = 1350  # 1500 items, every 10th an abstention
    assert doc["fit"]["n_fit"] + doc["evaluation"]["n_eval"] == n_scored
    assert doc["evaluation"]["n_eval"] == round(0.3 * n_scored)
    before, after = doc["evaluation"]["before"], doc["evaluation"]["after"]
    assert before["ece"] > 0.1, "the synthetic set should be clearly overconfident"
    assert after["ece"] < 0.6 * before["ece"]
    assert after["brier"] < before["brier"]
    # the report sits beside calibrator.json and shows the same numbers
    report = (cal_path.parent / "calibrator_report.md").read_text()
    assert f"{before['ece']:.4f}" in report and f"{after['ece']:.4f}" in report
    assert (cal_path.parent / "calibrator_reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (cal_path.parent / "calibrator_report.html").read_text()
    capsys.readouterr()

    out = tmp_path / "recal.jsonl"
    assert (
        main(
            [
                "recalibrate",
                "apply",
                "--calibrator",
                str(cal_path),
                "--predictions",
                str(preds_file),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    src, new = read_jsonl(preds_file), read_jsonl(out)
    assert [r["id"] for r in new] == [r["id"] for r in src]
    changed = 0
    for a, b in zip(src, new, strict=True):
        if a.get("abstained"):
            assert b == a  # abstentions untouched
            continue
        assert {k: v for k, v in b.items() if k != "confidence"} == {
            k: v for k, v in a.items() if k != "confidence"
        }
        assert 0.0 <= b["confidence"] <= 1.0
        changed += b["confidence"] != a["confidence"]
    assert changed > 0.5 * n_scored
    if method == "histogram":  # bin accuracies need not increase
        return
    # monotone methods keep the order of confidences (ties allowed)
    pairs = sorted(
        (a["confidence"], b["confidence"]) for a, b in zip(src, new, strict=True) if not a.get("abstained")
    )
    assert all(x[1] <= y[1] + 1e-12 for x, y in itertools.pairwise(pairs))


def test_apply_on_the_holdout_lowers_ece_when_evaluated(preds_file, tmp_path):
    """Fit on one file, apply to a fresh sample of the same process, and run `calrl eval` on both."""
    fresh = write_jsonl(tmp_path / "fresh.jsonl", overconfident_rows(1500, seed=7))
    cal = tmp_path / "temp.json"
    assert (
        main(
            [
                "recalibrate",
                "fit",
                "--predictions",
                str(preds_file),
                "--method",
                "temperature",
                "--out",
                str(cal),
                "--eval-predictions",
                str(fresh),
            ]
        )
        == 0
    )
    doc = json.loads(cal.read_text())
    assert doc["evaluation"]["split"]["kind"] == "file" and doc["fit"]["n_fit"] == 1350
    recal = tmp_path / "fresh_recal.jsonl"
    assert (
        main(
            [
                "recalibrate",
                "apply",
                "--calibrator",
                str(cal),
                "--predictions",
                str(fresh),
                "--out",
                str(recal),
            ]
        )
        == 0
    )
    for name, path in (("raw", fresh), ("recal", recal)):
        assert (
            main(["eval", "--predictions", str(path), "--out", str(tmp_path / name), "--bootstrap", "0"]) == 0
        )
    raw = json.loads((tmp_path / "raw" / "metrics.json").read_text())
    fixed = json.loads((tmp_path / "recal" / "metrics.json").read_text())
    assert fixed["accuracy"] == raw["accuracy"] and fixed["refusal_rate"] == raw["refusal_rate"]
    assert fixed["ece"] < 0.6 * raw["ece"]
    # the fit report's "after" on the eval file is what `calrl eval` measures on the rewritten file
    assert doc["evaluation"]["after"]["ece"] == pytest.approx(fixed["ece"], abs=1e-9)


def test_apply_keeps_csv_format_and_parsed_confidences(tmp_path):
    """CSV in, CSV out; a confidence parsed from the response is rewritten into the confidence column."""
    rows = overconfident_rows(300, seed=3)
    csv_in = tmp_path / "preds.csv"
    with csv_in.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "response", "correct", "abstained", "note"])
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    "id": r["id"],
                    "response": r["response"],
                    "correct": r.get("correct", ""),
                    "abstained": r.get("abstained", ""),
                    "note": f"n{r['id']}",
                }
            )
    cal = tmp_path / "platt.json"
    assert (
        main(["recalibrate", "fit", "--predictions", str(csv_in), "--method", "platt", "--out", str(cal)])
        == 0
    )
    out = tmp_path / "out.csv"
    assert (
        main(
            [
                "recalibrate",
                "apply",
                "--calibrator",
                str(cal),
                "--predictions",
                str(csv_in),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with csv_in.open(encoding="utf-8") as f:
        src = list(csv.DictReader(f))
    with out.open(encoding="utf-8") as f:
        new = list(csv.DictReader(f))
    assert [r["id"] for r in new] == [r["id"] for r in src]
    for a, b in zip(src, new, strict=True):
        assert {k: b[k] for k in a} | {"confidence": ""} == a | {"confidence": ""}
        assert (b["confidence"] == "") == (a["abstained"] == "True")
    # wrong output format is refused
    assert (
        main(
            [
                "recalibrate",
                "apply",
                "--calibrator",
                str(cal),
                "--predictions",
                str(csv_in),
                "--out",
                str(tmp_path / "out.jsonl"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize("fmt", ["parquet", "dataset"])
def test_apply_keeps_columnar_formats(fmt, preds_file, tmp_path):
    import datasets

    rows = overconfident_rows(200, seed=5)
    for r in rows:  # columnar formats need one type per column
        r.setdefault("correct", None)
        r.setdefault("confidence", None)
        r.setdefault("abstained", False)
    ds = datasets.Dataset.from_list(rows)
    if fmt == "parquet":
        src, out = tmp_path / "preds.parquet", tmp_path / "out.parquet"
        ds.to_parquet(str(src))
    else:
        src, out = tmp_path / "preds_ds", tmp_path / "out_ds"
        ds.save_to_disk(str(src))
    cal = tmp_path / "hist.json"
    assert (
        main(
            [
                "recalibrate",
                "fit",
                "--predictions",
                str(preds_file),
                "--method",
                "histogram",
                "--out",
                str(cal),
            ]
        )
        == 0
    )
    assert (
        main(["recalibrate", "apply", "--calibrator", str(cal), "--predictions", str(src), "--out", str(out)])
        == 0
    )
    if fmt == "parquet":
        new = datasets.Dataset.from_parquet(str(out)).to_list()
    else:
        new = datasets.load_from_disk(str(out)).to_list()
    assert [r["id"] for r in new] == [r["id"] for r in rows]
    for a, b in zip(rows, new, strict=True):
        assert {k: b[k] for k in a if k != "confidence"} == {k: v for k, v in a.items() if k != "confidence"}
        if a["abstained"]:
            assert b["confidence"] is None
        else:
            assert b["confidence"] is not None and 0.0 <= b["confidence"] <= 1.0
    assert (
        sum(b["confidence"] != a["confidence"] for a, b in zip(rows, new, strict=True) if not a["abstained"])
        > 90
    )


def test_bad_input_is_one_line_exit_2_and_writes_nothing(preds_file, tmp_path, capsys):
    cal = tmp_path / "cal.json"

    def run(argv: list[str], expect: str) -> None:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("calrl recalibrate: error:") and "\n" not in err, err
        assert expect in err, err

    run(
        ["recalibrate", "fit", "--predictions", str(preds_file), "--method", "spline", "--out", str(cal)],
        "field 'method'",
    )
    run(
        [
            "recalibrate",
            "fit",
            "--predictions",
            str(tmp_path / "missing.jsonl"),
            "--method",
            "platt",
            "--out",
            str(cal),
        ],
        "file not found",
    )
    run(
        [
            "recalibrate",
            "fit",
            "--predictions",
            str(preds_file),
            "--method",
            "platt",
            "--out",
            str(cal),
            "--holdout-fraction",
            "1.5",
        ],
        "holdout-fraction",
    )
    assert not cal.exists() and list(tmp_path.iterdir()) == []

    out = tmp_path / "out.jsonl"
    run(
        [
            "recalibrate",
            "apply",
            "--calibrator",
            str(tmp_path / "none.json"),
            "--predictions",
            str(preds_file),
            "--out",
            str(out),
        ],
        "file not found",
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"method": "temperature",\n  "params": }')
    run(
        [
            "recalibrate",
            "apply",
            "--calibrator",
            str(broken),
            "--predictions",
            str(preds_file),
            "--out",
            str(out),
        ],
        "broken.json:2",
    )
    no_method = tmp_path / "no_method.json"
    no_method.write_text(json.dumps({"format": "calrl.calibrator/1", "params": {}}))
    run(
        [
            "recalibrate",
            "apply",
            "--calibrator",
            str(no_method),
            "--predictions",
            str(preds_file),
            "--out",
            str(out),
        ],
        "field 'method'",
    )
    assert (
        main(
            [
                "recalibrate",
                "fit",
                "--predictions",
                str(preds_file),
                "--method",
                "temperature",
                "--out",
                str(cal),
            ]
        )
        == 0
    )
    bad_params = json.loads(cal.read_text())
    bad_params.pop("params", None)
    for key in [k for k in bad_params if k not in ("method", "format", "fit", "evaluation")]:
        bad_params.pop(key)
    bad = tmp_path / "bad_params.json"
    bad.write_text(json.dumps(bad_params))
    run(
        [
            "recalibrate",
            "apply",
            "--calibrator",
            str(bad),
            "--predictions",
            str(preds_file),
            "--out",
            str(out),
        ],
        "bad_params.json",
    )
    assert not out.exists()


def test_fit_warns_when_the_evaluation_items_were_fitted_on(preds_file, tmp_path, capsys):
    """The sweep's finding: --eval-predictions equal to the fit file reported ECE 0.30 -> 0.00 silently."""
    cal = tmp_path / "same.json"
    argv = ["recalibrate", "fit", "--predictions", str(preds_file), "--method", "histogram", "--out", str(cal)]
    assert main(argv + ["--eval-predictions", str(preds_file)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1350 of the 1350 evaluation items are also fit items" in err
    doc = json.loads(cal.read_text())
    (warning,) = doc["evaluation"]["warnings"]
    assert "--eval-predictions is the --predictions file" in warning
    assert "Warning: 1350 of the 1350" in (tmp_path / "same_report.md").read_text()
    # a separate file sharing some ids is named as such; a holdout split never warns
    part = write_jsonl(tmp_path / "part.jsonl", overconfident_rows(40))
    cal2 = tmp_path / "part_cal.json"
    assert main(argv[:-1] + [str(cal2), "--eval-predictions", str(part)]) == 0
    assert "the two files share ids" in json.loads(cal2.read_text())["evaluation"]["warnings"][0]
    assert "36 of the 36 evaluation items" in capsys.readouterr().err  # 40 rows, 4 abstentions
    cal3 = tmp_path / "holdout.json"
    assert main(argv[:-1] + [str(cal3)]) == 0
    assert json.loads(cal3.read_text())["evaluation"]["warnings"] == []
    assert "warning" not in capsys.readouterr().err


def test_fit_twice_needs_overwrite_and_replaces_all_four_files(preds_file, tmp_path, capsys):
    cal = tmp_path / "c.json"
    argv = ["recalibrate", "fit", "--predictions", str(preds_file), "--method", "platt", "--out", str(cal)]
    assert main(argv) == 0
    outputs = [cal] + [tmp_path / f"c{s}" for s in ("_report.md", "_report.html", "_reliability.png")]
    first = {p: p.read_bytes() for p in outputs}
    assert main(argv + ["--seed", "1"]) == 2
    assert "c.json: already exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert all(p.read_bytes() == b for p, b in first.items())
    assert main(argv + ["--seed", "1", "--overwrite"]) == 0
    assert json.loads(cal.read_text())["fit"]["split"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in outputs)  # no staging left
