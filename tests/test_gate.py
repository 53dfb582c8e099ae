"""The release gate: rules on synthetic resolved records, paired bootstrap sanity, CLI end to end."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest

from calrl.cli.main import main
from calrl.data.records import ResolvedRecord
from calrl.errors import InputError
from calrl.gate.config import GateConfig
from calrl.gate.gate import evaluate_gate


def calibrated_set(n_per_level: int = 10, domains: tuple[str, ...] = ("a", "b")) -> list[ResolvedRecord]:
    """Per domain and per confidence k/10 (k = 1..9): exactly k/10 of the items correct -> ECE 0."""
    out = []
    for d in domains:
        for k in range(1, 10):
            for j in range(n_per_level):
                out.append(
                    ResolvedRecord(
                        id=f"{d}-{k}-{j}",
                        abstained=False,
                        correct=j < k * n_per_level // 10,
                        confidence=k / 10,
                        confidence_source="given",
                        hedged=False,
                        slice={"domain": d},
                    )
                )
    return out


def overconfident_on(records: list[ResolvedRecord], domain: str, conf: float = 0.95) -> list[ResolvedRecord]:
    return [replace(r, confidence=conf) if r.slice["domain"] == domain else r for r in records]


def codes(findings) -> list[str]:
    return [f.code for f in findings]


FAST = GateConfig(n_boot=200)


def test_identical_runs_pass_with_zero_deltas_and_intervals_covering_zero():
    recs = calibrated_set()
    result = evaluate_gate(recs, recs, FAST)
    assert result.verdict == "pass" and result.reasons == []
    for name in ("accuracy", "ece", "brier", "refusal_rate"):
        d = getattr(result.deltas, name)
        assert d.delta == 0.0
        assert d.low <= 0.0 <= d.high
        assert d.n_boot == 200
    assert result.deltas.ece.baseline == pytest.approx(0.0, abs=1e-12)
    assert result.matching.n_matched == len(recs) and result.matching.n_only_baseline == 0
    assert all(s.status == "ok" for s in result.slices)
    json.dumps(result.to_dict(), allow_nan=False)


def test_overconfident_slice_blocks_with_a_slice_reason():
    base = calibrated_set()
    cand = overconfident_on(base, "b")
    result = evaluate_gate(base, cand, FAST)
    assert result.verdict == "blocked"
    slice_reasons = [f for f in result.reasons if f.code == "slice_ece_rise"]
    assert [(f.numbers["key"], f.numbers["value"]) for f in slice_reasons] == [("domain", "b")]
    row_b = next(s for s in result.slices if s.value == "b")
    # domain b: accuracy 0.5 at confidence 0.95 -> ECE 0.45, from 0
    assert row_b.ece_candidate == pytest.approx(0.45) and row_b.delta == pytest.approx(0.45)
    assert next(s for s in result.slices if s.value == "a").status == "ok"
    # the whole set rose by 0.225 too, and the ECE delta interval excludes 0
    assert "ece_rise" in codes(result.reasons)
    assert result.deltas.ece.low > 0.0
    assert result.deltas.brier.delta > 0.0
    assert result.deltas.accuracy.delta == 0.0


def test_small_slice_rise_is_listed_and_warned_not_blocking():
    base = calibrated_set(n_per_level=10)
    # a tiny third slice (9 items) that becomes overconfident
    extra = calibrated_set(n_per_level=1, domains=("c",))
    base = base + extra
    cand = overconfident_on(base, "c", conf=1.0)
    result = evaluate_gate(base, cand, GateConfig(n_boot=50, slice_ece_threshold=0.05, min_slice_size=30))
    row_c = next(s for s in result.slices if s.value == "c")
    assert row_c.status == "small" and row_c.n_scored_candidate == 9
    assert "small_slice_ece_rise" in codes(result.warnings)
    assert "slice_ece_rise" not in codes(result.reasons)


def _with_abstentions(records: list[ResolvedRecord], every: int) -> list[ResolvedRecord]:
    return [
        replace(r, abstained=True, correct=False, confidence=None, confidence_source="abstained")
        if i % every == 0
        else r
        for i, r in enumerate(records)
    ]


def test_refusal_collapse_to_zero_blocks_as_infinite_factor():
    recs = calibrated_set()  # 180 items
    base = _with_abstentions(recs, every=5)  # 36 refusals
    result = evaluate_gate(base, recs, FAST)
    assert "refusal_collapse" in codes(result.reasons)
    ref = result.refusal
    assert ref.factor_infinite and math.isinf(ref.factor)
    assert ref.baseline_refusals == 36 and ref.candidate_refusals == 0
    assert ref.effective_factor == pytest.approx(36.0)
    assert result.to_dict()["refusal"]["factor"] is None  # JSON-safe
    assert result.deltas.refusal_rate.delta == pytest.approx(-0.2)


def test_refusal_factor_edges():
    recs = calibrated_set()  # 180 items
    # 2 baseline refusals, none in the candidate: too few to call a collapse at factor 5
    base = _with_abstentions(recs, every=90)
    result = evaluate_gate(base, recs, FAST)
    assert "refusal_collapse" not in codes(result.reasons) and result.refusal.factor_infinite
    # 45 -> 9 refusals: factor exactly 5 blocks; 45 -> 10 (4.5) does not
    base = _with_abstentions(recs, every=4)  # 45
    cand_9 = _with_abstentions(recs, every=20)  # 9
    cand_10 = _with_abstentions(recs, every=18)  # 10
    assert evaluate_gate(base, cand_9, FAST).refusal.factor == pytest.approx(5.0)
    assert "refusal_collapse" in codes(evaluate_gate(base, cand_9, FAST).reasons)
    assert "refusal_collapse" not in codes(evaluate_gate(base, cand_10, FAST).reasons)
    # a stricter factor blocks 4.5 as well
    assert "refusal_collapse" in codes(
        evaluate_gate(base, cand_10, GateConfig(n_boot=0, refusal_collapse_factor=4.0)).reasons
    )


def test_confidence_collapse_warns_without_blocking():
    base = calibrated_set()  # accuracy 0.5, confidences 0.1..0.9, ECE 0
    cand = [replace(r, confidence=0.5) for r in base]  # ECE stays 0, spread gone
    result = evaluate_gate(base, cand, FAST)
    assert result.verdict == "pass"
    (warning,) = [w for w in result.warnings if w.code == "confidence_collapse"]
    assert warning.numbers["std_candidate"] == 0.0 and warning.numbers["std_baseline"] > 0.2
    assert warning.numbers["distinct_baseline"] == 9 and warning.numbers["distinct_candidate"] == 1
    # a mild shrink (0.1..0.9 -> 0.3..0.7) is not a collapse at ratio 0.5
    mild = [replace(r, confidence=0.5 + (r.confidence - 0.5) * 0.5) for r in base]
    assert "confidence_collapse" not in codes(evaluate_gate(base, mild, FAST).warnings)


def test_paired_bootstrap_interval_sanity():
    rng = random.Random(0)
    n = 400
    base, cand = [], []
    for i in range(n):
        b_ok = rng.random() < 0.5
        c_ok = b_ok or rng.random() < 0.4  # candidate fixes ~20% of the items, never breaks one
        conf = rng.choice([0.3, 0.5, 0.7])
        base.append(ResolvedRecord(f"q{i}", False, b_ok, conf, "given", False))
        cand.append(ResolvedRecord(f"q{i}", False, c_ok, conf, "given", False))
    result = evaluate_gate(base, cand, GateConfig(n_boot=500, seed=1))
    acc = result.deltas.accuracy
    true_delta = (sum(c.correct for c in cand) - sum(b.correct for b in base)) / n
    assert acc.delta == pytest.approx(true_delta)
    assert 0.0 < acc.low < true_delta < acc.high
    # paired: the delta's spread is that of the fixes alone (binomial sd ~0.02), far below unpaired (~0.035)
    assert acc.high - acc.low < 0.1
    # same seed -> same interval; another seed -> a different one
    again = evaluate_gate(base, cand, GateConfig(n_boot=500, seed=1)).deltas.accuracy
    other = evaluate_gate(base, cand, GateConfig(n_boot=500, seed=2)).deltas.accuracy
    assert (again.low, again.high) == (acc.low, acc.high)
    assert (other.low, other.high) != (acc.low, acc.high)


def test_matching_reports_one_sided_ids_and_rejects_disjoint_or_duplicate_ids():
    recs = calibrated_set()
    result = evaluate_gate(recs[:150], recs[30:], FAST)
    assert result.matching.n_matched == 120
    assert result.matching.n_only_baseline == 30 and result.matching.n_only_candidate == 30
    assert "unmatched_ids" in codes(result.warnings)
    with pytest.raises(InputError, match="share no id"):
        evaluate_gate(recs[:10], recs[10:20], FAST)
    with pytest.raises(InputError, match="duplicate id"):
        evaluate_gate(recs[:10] + recs[:1], recs, FAST)


def test_missing_confidence_policies():
    base = calibrated_set()
    cand = [
        replace(r, confidence=None, confidence_source="missing") if i < 10 else r for i, r in enumerate(base)
    ]
    excluded = evaluate_gate(base, cand, FAST)
    assert excluded.matching.n_missing_confidence_candidate == 10
    assert "missing_confidence" in codes(excluded.warnings)
    with pytest.raises(InputError, match="no confidence"):
        evaluate_gate(base, cand, GateConfig(n_boot=0, missing_policy="error"))
    with pytest.raises(InputError, match="refusal_collapse_factor"):
        GateConfig(refusal_collapse_factor=1.0)


# ------------------------------------------------------------------------------------------------ CLI
def write_predictions(path: Path, records: list[ResolvedRecord]) -> Path:
    """A predictions file with given correctness and confidence (no parsing needed)."""
    rows = []
    for r in records:
        row = {"id": r.id, "slice": r.slice}
        if r.abstained:
            row.update(response="I don't know.", abstained=True)
        else:
            row.update(response=f"answer {r.id}", correct=r.correct, confidence=r.confidence)
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def eval_folder(tmp: Path, name: str, records: list[ResolvedRecord]) -> Path:
    preds = write_predictions(tmp / f"{name}.jsonl", records)
    out = tmp / f"eval_{name}"
    assert main(["eval", "--predictions", str(preds), "--out", str(out), "--bootstrap", "0"]) == 0
    return out


def test_cli_exit_codes_end_to_end(tmp_path, capsys):
    base_recs = calibrated_set()
    base = eval_folder(tmp_path, "base", base_recs)
    same = eval_folder(tmp_path, "same", base_recs)
    over = eval_folder(tmp_path, "over", overconfident_on(base_recs, "b"))

    out_pass = tmp_path / "gate_pass"
    assert (
        main(
            [
                "compare",
                "--baseline",
                str(base),
                "--candidate",
                str(same),
                "--out",
                str(out_pass),
                "--bootstrap",
                "100",
            ]
        )
        == 0
    )
    gate = json.loads((out_pass / "gate.json").read_text())
    assert gate["verdict"] == "pass" and gate["deltas"]["ece"]["delta"] == 0.0
    # the gate's per-side numbers equal what `calrl eval` reported for the same items
    base_metrics = json.loads((base / "metrics.json").read_text())
    assert gate["deltas"]["ece"]["baseline"] == pytest.approx(base_metrics["ece"], abs=1e-12)
    assert gate["deltas"]["brier"]["baseline"] == pytest.approx(base_metrics["brier"], abs=1e-12)
    assert gate["metrics"]["baseline"]["accuracy"] == pytest.approx(base_metrics["accuracy"])

    out_block = tmp_path / "gate_block"
    assert (
        main(
            [
                "compare",
                "--baseline",
                str(base),
                "--candidate",
                str(over),
                "--out",
                str(out_block),
                "--bootstrap",
                "100",
                "--slice-ece-threshold",
                "0.1",
            ]
        )
        == 1
    )
    gate = json.loads((out_block / "gate.json").read_text())
    assert gate["verdict"] == "blocked"
    assert {"ece_rise", "slice_ece_rise"} <= {r["code"] for r in gate["reasons"]}
    assert gate["config"]["slice_ece_threshold"] == 0.1
    assert {s["value"]: s["status"] for s in gate["slices"]} == {"all": "blocked", "a": "ok", "b": "blocked"}
    png = (out_block / "reliability_overlay.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    report_html = (out_block / "report.html").read_text()
    assert "data:image/png;base64," in report_html and "BLOCKED" in report_html
    report_md = (out_block / "report.md").read_text()
    assert "slice_ece_rise" in report_md and "reliability_overlay.png" in report_md
    assert "blocked [slice_ece_rise]" in capsys.readouterr().out

    # a predictions file works as a side too
    assert (
        main(
            [
                "compare",
                "--baseline",
                str(tmp_path / "base.jsonl"),
                "--candidate",
                str(tmp_path / "over.jsonl"),
                "--out",
                str(tmp_path / "gate_files"),
                "--bootstrap",
                "0",
            ]
        )
        == 1
    )


def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    recs = calibrated_set()
    left = eval_folder(tmp_path, "left", recs[:90])
    right = eval_folder(tmp_path, "right", recs[90:])
    capsys.readouterr()
    cases = [
        ["--baseline", str(left), "--candidate", str(right)],  # no shared id
        ["--baseline", str(left), "--candidate", str(tmp_path / "nope")],  # missing
        [
            "--baseline",
            str(left),
            "--candidate",
            str(left),
            "--refusal-collapse-factor",
            "0.5",
        ],  # bad threshold
    ]
    for i, extra in enumerate(cases):
        out = tmp_path / f"gate_bad_{i}"
        assert main(["compare", *extra, "--out", str(out), "--bootstrap", "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("calrl compare: error:") and "\n" not in err
        assert not out.exists()
    malformed = tmp_path / "bad.jsonl"
    malformed.write_text('{"id": "x", "response": "a", "correct": true, "confidence": 0.5}\n{oops\n')
    out = tmp_path / "gate_malformed"
    assert main(["compare", "--baseline", str(malformed), "--candidate", str(left), "--out", str(out)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err and not out.exists()


def test_cli_reads_resolved_jsonl_folders(tmp_path, capsys):
    from dataclasses import asdict

    recs = calibrated_set()
    for name, side in (("b", recs), ("c", _with_abstentions(recs, every=3))):
        (tmp_path / name).mkdir()
        lines = [json.dumps(asdict(r)) for r in side]
        (tmp_path / name / "resolved.jsonl").write_text("\n".join(lines) + "\n")
    # the candidate refuses more than the baseline (0 -> 60): an explosion, not a collapse; the
    # comparison runs on the resolved records
    assert main(
        [
            "compare",
            "--baseline",
            str(tmp_path / "b"),
            "--candidate",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "g"),
            "--bootstrap",
            "50",
        ]
    ) == 1
    gate = json.loads((tmp_path / "g" / "gate.json").read_text())
    assert gate["sources"]["baseline"].endswith("resolved.jsonl")
    assert gate["refusal"]["candidate_refusals"] == 60 and not gate["refusal"]["collapsed"]
    assert gate["refusal"]["exploded"] and "refusal_explosion" in [r["code"] for r in gate["reasons"]]

    bad = tmp_path / "bad"
    bad.mkdir()
    row = asdict(recs[0]) | {"confidence": 1.5}
    (bad / "resolved.jsonl").write_text(json.dumps(asdict(recs[1])) + "\n" + json.dumps(row) + "\n")
    capsys.readouterr()
    assert (
        main(
            [
                "compare",
                "--baseline",
                str(bad),
                "--candidate",
                str(tmp_path / "b"),
                "--out",
                str(tmp_path / "g2"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "resolved.jsonl:2: field 'confidence'" in err and not (tmp_path / "g2").exists()


def test_masked_bootstrap_metrics_equal_the_metrics_on_scored_items():
    """The bootstrap codes abstentions as confidence -1 and rescales; rows must match the plain metric."""
    import functools

    import torch

    from calrl.gate.stats import UNSCORED, masked_mean_metric
    from calrl.metrics import brier_score, expected_calibration_error

    gen = torch.Generator().manual_seed(0)
    conf = torch.round(torch.rand(3, 50, generator=gen, dtype=torch.float64) * 10) / 10
    correct = torch.rand(3, 50, generator=gen) < conf
    scored = torch.rand(3, 50, generator=gen) < 0.7
    coded = torch.where(scored, conf, torch.full_like(conf, UNSCORED))
    for metric in (functools.partial(expected_calibration_error, n_bins=15), brier_score):
        rows = masked_mean_metric(metric)(coded, correct)
        for i in range(3):
            direct = metric(conf[i][scored[i]], correct[i][scored[i]])
            assert float(rows[i]) == pytest.approx(float(direct), abs=1e-12)


def test_refusal_explosion_blocks_with_the_collapse_factor():
    recs = calibrated_set()  # 180 items, no refusal
    # 45 -> 9 refusals is a collapse at factor 5; the reverse, 9 -> 45, is an explosion at the same factor
    few, many = _with_abstentions(recs, every=20), _with_abstentions(recs, every=4)
    result = evaluate_gate(few, many, GateConfig(n_boot=0, max_accuracy_drop=0.99))
    assert codes(result.reasons) == ["refusal_explosion"]
    assert result.refusal.rise_factor == pytest.approx(5.0) and not result.refusal.collapsed
    # 10 -> 45 (4.5) does not block at factor 5, does at 4
    ten = _with_abstentions(recs, every=18)
    lenient = GateConfig(n_boot=0, max_accuracy_drop=0.99)
    assert "refusal_explosion" not in codes(evaluate_gate(ten, many, lenient).reasons)
    strict = GateConfig(n_boot=0, max_accuracy_drop=0.99, refusal_collapse_factor=4.0)
    assert "refusal_explosion" in codes(evaluate_gate(ten, many, strict).reasons)
    # no baseline refusal: the floor of one refusal makes 0 -> 4 pass and 0 -> 5 block
    assert "refusal_explosion" not in codes(evaluate_gate(recs, _with_abstentions(recs, every=45), lenient).reasons)
    assert "refusal_explosion" in codes(evaluate_gate(recs, _with_abstentions(recs, every=36), lenient).reasons)
    # above the maximum rate blocks even when the factor does not: 60% -> 90%
    base = [replace(r, abstained=True, correct=False, confidence=None, confidence_source="abstained")
            if i % 10 < 6 else r for i, r in enumerate(recs)]
    cand = [replace(r, abstained=True, correct=False, confidence=None, confidence_source="abstained")
            if i % 10 < 9 else r for i, r in enumerate(recs)]
    found = evaluate_gate(base, cand, lenient)
    (reason,) = [f for f in found.reasons if f.code == "refusal_explosion"]
    assert "above the maximum refusal rate 0.5" in reason.message and "factor" not in reason.message.split(":")[1]
    assert "refusal_explosion" not in codes(evaluate_gate(base, cand, replace(lenient, max_refusal_rate=0.95)).reasons)


def test_all_refusing_candidate_blocks_on_refusals_and_accuracy_and_warns_collapse():
    """The sweep's finding: a candidate saying "I don't know." to every item passed the gate."""
    recs = calibrated_set()  # accuracy 0.5
    cand = [replace(r, abstained=True, correct=False, confidence=None, confidence_source="abstained") for r in recs]
    result = evaluate_gate(recs, cand, GateConfig(n_boot=200))
    assert result.verdict == "blocked"
    assert {"refusal_explosion", "accuracy_drop"} <= set(codes(result.reasons))
    assert result.accuracy.drop == pytest.approx(0.5) and result.accuracy.interval_high < 0
    (warning,) = [w for w in result.warnings if w.code == "confidence_collapse"]
    assert "the candidate on none" in warning.message
    gate = result.to_dict()
    assert gate["accuracy"]["blocked"] and json.dumps(gate, allow_nan=False)


def test_accuracy_drop_needs_the_margin_and_an_interval_below_zero():
    recs = calibrated_set(n_per_level=20)  # 360 items, accuracy 0.5

    def flip(records, share):  # turn correct answers wrong, keeping confidences
        correct = [i for i, r in enumerate(records) if r.correct]
        k = round(share * len(records))
        hit = set(correct[::max(1, len(correct) // k)][:k])
        return [replace(r, correct=False) if i in hit else r for i, r in enumerate(records)]

    lenient = {"n_boot": 300, "slice_ece_threshold": 0.99}
    ten_points = flip(recs, 0.10)
    result = evaluate_gate(recs, ten_points, GateConfig(**lenient))
    assert codes(result.reasons) == ["accuracy_drop"]
    assert result.accuracy.drop == pytest.approx(0.10) and result.accuracy.interval_high < 0
    # within the margin: no block; a wider margin lets 10 points pass
    assert evaluate_gate(recs, flip(recs, 0.03), GateConfig(**lenient)).passed
    assert evaluate_gate(recs, ten_points, GateConfig(max_accuracy_drop=0.12, **lenient)).passed
    # a drop above the margin on 4 items of which one flips is noise: the interval covers 0
    small = recs[:1] + recs[170:173]
    noisy = evaluate_gate(small, flip(small, 0.25), GateConfig(n_boot=300, max_accuracy_drop=0.05,
                                                               min_slice_size=30))
    assert noisy.accuracy.drop > 0.05 and noisy.accuracy.interval_high >= 0
    assert "accuracy_drop" not in codes(noisy.reasons)
    # without the bootstrap the point estimate decides
    assert "accuracy_drop" in codes(evaluate_gate(small, flip(small, 0.25), GateConfig(n_boot=0)).reasons)


def test_confidence_collapse_on_the_cli_warns_and_the_report_names_every_reason(tmp_path, capsys):
    recs = calibrated_set()
    cand = [replace(r, confidence=0.5) for r in recs]  # same accuracy and ECE, spread gone
    for name, side in (("b", recs), ("c", cand)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "resolved.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in side))
    argv = ["compare", "--baseline", str(tmp_path / "b"), "--candidate", str(tmp_path / "c"), "--bootstrap", "20"]
    assert main(argv + ["--out", str(tmp_path / "g")]) == 0
    gate = json.loads((tmp_path / "g" / "gate.json").read_text())
    assert [w["code"] for w in gate["warnings"]] == ["confidence_collapse"] and gate["reasons"] == []
    assert "confidence_collapse" in capsys.readouterr().out
    # the all-refusing candidate: exit 1, every reason in gate.json and in the report
    refusing = [replace(r, abstained=True, correct=False, confidence=None, confidence_source="abstained")
                for r in recs]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "resolved.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in refusing))
    argv[4] = str(tmp_path / "r")
    assert main(argv + ["--out", str(tmp_path / "g2")]) == 1
    gate = json.loads((tmp_path / "g2" / "gate.json").read_text())
    found = [r["code"] for r in gate["reasons"]]
    assert "refusal_explosion" in found and "accuracy_drop" in found
    report = (tmp_path / "g2" / "report.md").read_text()
    assert all(f"`{code}`" in report for code in found) and "BLOCKED (explosion)" in report
