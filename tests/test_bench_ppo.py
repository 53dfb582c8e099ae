"""scripts/bench_ppo.py: the quick run (calrl side only, no trl venv) prints and writes the expected fields."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_ppo.py"


@pytest.mark.slow
def test_bench_ppo_quick_skip_trl(tmp_path):
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--skip-trl", "--device", "cpu",
                           "--json", str(out_json)], capture_output=True, text=True, cwd=REPO, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("bench_ppo: device cpu, torch ") for line in lines), proc.stdout
    fields = {line.split(":", 1)[0] for line in lines if ":" in line}
    assert {"calrl_update_median_s", "ratio_calrl_over_trl", "share tiny ppo_c_threshold",
            "share tiny vanilla_rm_only", "share_overhead tiny", "share 12-layer ppo_c_threshold",
            "share 12-layer vanilla_rm_only", "share_overhead 12-layer"} <= fields, proc.stdout
    assert "ratio_calrl_over_trl: skipped (--skip-trl)" in proc.stdout
    assert "[update] round 1/1 calrl" in proc.stderr  # progress goes to stderr

    result = json.loads(out_json.read_text())
    calrl = result["update"]["sides"]["calrl"]
    assert set(result["update"]["sides"]) == {"calrl"} and calrl["device"] == "cpu" and calrl["updates"] == 3
    assert 0 < calrl["median_update_s"] and 0 < calrl["median_update_cpu_s"]
    for size in ("tiny", "12-layer"):
        row = result["share"][size]
        assert row["parsable"] > 0.5  # the scripted policy states a confidence in (nearly) every rollout
        for variant in ("threshold", "none"):
            assert 0 < row[variant]["share_wall"] < 1 and 0 < row[variant]["share_cpu"] < 1
            assert row[variant]["updates"] == 2


def test_bench_ppo_missing_trl_venv_message(tmp_path, monkeypatch, capsys):
    """Without scripts/ppo_parity/.venv the trl side stops at once: exit 2, one line naming setup_venv.sh."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_ppo
    finally:
        sys.path.remove(str(SCRIPT.parent))
    monkeypatch.setattr(bench_ppo, "TRL_PYTHON", tmp_path / "no-venv" / "bin" / "python")
    monkeypatch.setattr(bench_ppo, "REPO", tmp_path)
    assert bench_ppo.main(["--parts", "update", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "setup_venv.sh" in err[0] and "--skip-trl" in err[0]
