"""The paper's preference-data filter (methods.md sec 9): single-turn pairs, the stronger share by RM difference.

Hand-worked numbers: scorers given as tables of scores, and two tiny reward models where the second is the
first with stored statistics (mean 5, std 2), so its difference is the first's halved and the mean strength
is 0.75 x the first model's difference.
"""

import json
from pathlib import Path

import datasets
import pytest
import torch

from calrl.cli.main import main
from calrl.errors import InputError
from calrl.reward_modeling.filtering import filter_preferences, is_single_turn_pair, report_path, strongest
from calrl.reward_modeling.probe import score_texts
from calrl.reward_modeling.stats import write_reward_statistics
from calrl.tiny.models import build_tiny_reward_model, build_word_tokenizer, save_pretrained

PAIRS = Path(__file__).resolve().parents[1] / "calrl" / "data" / "tiny" / "pairs.jsonl"
U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}
S = {"role": "system", "content": "s"}

ROWS = [
    {"id": 0, "prompt": "p0", "chosen": "a", "rejected": "b"},
    {"id": 1, "prompt": [U], "chosen": [A], "rejected": [A]},
    {"id": 2, "prompt": [U, A, U], "chosen": [A], "rejected": [A]},           # multi-turn prompt
    {"id": 3, "chosen": [U, A], "rejected": [U, A]},                          # implicit prompt, one turn
    {"id": 4, "chosen": [S, U, A], "rejected": [S, U, A]},                    # three messages: dropped
    {"id": 5, "prompt": "p5", "chosen": "c", "rejected": "d"},
]
# score tables: (row id, column) -> score.  A's differences: 2, -1, 3, 0; B's: -2, 4, -1, 1
TABLE_A = {(0, "chosen"): 3, (0, "rejected"): 1, (1, "chosen"): 1, (1, "rejected"): 2,
           (3, "chosen"): 2, (3, "rejected"): -1, (5, "chosen"): 0.5, (5, "rejected"): 0.5}
TABLE_B = {(0, "chosen"): 0, (0, "rejected"): 2, (1, "chosen"): 4, (1, "rejected"): 0,
           (3, "chosen"): 0, (3, "rejected"): 1, (5, "chosen"): 1, (5, "rejected"): 0}


def table_scorer(table):
    return lambda rows, column: torch.tensor([float(table[(r["id"], column)]) for r in rows])


def test_single_turn_rule():
    assert [is_single_turn_pair(r) for r in ROWS] == [True, True, False, True, False, True]
    assert not is_single_turn_pair({"prompt": "p", "chosen": [A, U, A], "rejected": [A]})  # multi-turn response
    assert not is_single_turn_pair({"prompt": [S, U], "chosen": "a", "rejected": "b"})    # not one user message
    # --system-prompt: a system message before the one user message is no turn
    assert [is_single_turn_pair(r, system_prompt=True) for r in ROWS] == [True, True, False, True, True, True]
    assert is_single_turn_pair({"prompt": [S, U], "chosen": "a", "rejected": "b"}, system_prompt=True)
    assert not is_single_turn_pair({"prompt": [S, U, A, U], "chosen": "a", "rejected": "b"}, system_prompt=True)
    with pytest.raises(InputError, match="row 7: field 'chosen'|field 'chosen': row 7"):
        is_single_turn_pair({"chosen": 3, "rejected": "b"}, index=7)


def test_two_scorers_mean_of_differences_keeps_the_stronger_half():
    kept, report = filter_preferences(ROWS, [table_scorer(TABLE_A), table_scorer(TABLE_B)], keep_fraction=0.5)
    # mean strengths: row 0 (2 - 2)/2 = 0, row 1 (-1 + 4)/2 = 1.5, row 3 (3 - 1)/2 = 1, row 5 (0 + 1)/2 = 0.5
    assert [r["id"] for r in kept] == [1, 3]  # floor(0.5 * 4) = 2, in the input's order
    assert kept[0]["preference_strength"] == 1.5
    assert (kept[0]["chosen_score"], kept[0]["rejected_score"]) == (2.5, 1.0)  # (1 + 4)/2, (2 + 0)/2
    assert (report.n_rows, report.n_single_turn, report.n_multi_turn, report.n_kept) == (6, 4, 2, 2)
    assert report.min_kept_strength == 1.0 and report.mean_strength_kept == 1.25
    assert report.mean_strength_single_turn == 0.75  # (0 + 1.5 + 1 + 0.5) / 4
    three, _ = filter_preferences(ROWS, [table_scorer(TABLE_A), table_scorer(TABLE_B)], keep_fraction=0.75)
    assert [r["id"] for r in three] == [1, 3, 5]
    every, _ = filter_preferences(ROWS, [table_scorer(TABLE_A), table_scorer(TABLE_B)], keep_fraction=1.0)
    assert [r["id"] for r in every] == [0, 1, 3, 5]
    one, _ = filter_preferences(ROWS, [table_scorer(TABLE_A)], keep_fraction=0.5)
    assert [r["id"] for r in one] == [0, 3]  # A alone: 2, -1, 3, 0


def test_ties_keep_the_earlier_row_and_bad_fractions_fail():
    assert strongest(torch.tensor([1.0, 2.0, 1.0, 1.0]), 0.5) == [0, 1]
    assert strongest(torch.tensor([1.0, 2.0, 1.0, 1.0]), 0.74) == [0, 1]  # floor(2.96) = 2
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(InputError, match=r"keep_fraction'?: must be in \(0, 1\]"):
            strongest(torch.tensor([1.0]), bad)
    with pytest.raises(InputError, match="no rows left: keep fraction 0.2 of 4 single-turn rows keeps none"):
        filter_preferences(ROWS, [table_scorer(TABLE_A)], keep_fraction=0.2)
    with pytest.raises(InputError, match="no rows left: none of the 2 rows is a single-turn pair"):
        filter_preferences([ROWS[2], ROWS[4]], [table_scorer(TABLE_A)])
    with pytest.raises(InputError, match="missing dataset column 'rejected'"):
        filter_preferences([{"prompt": "p", "chosen": "a"}], [table_scorer(TABLE_A)])


# ------------------------------------------------------------------------------ the command, tiny RMs
@pytest.fixture(scope="module")
def tiny_rms(tmp_path_factory):
    root = tmp_path_factory.mktemp("rms")
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    tok = build_word_tokenizer([r[k] for r in rows for k in ("prompt", "chosen", "rejected")])
    model = build_tiny_reward_model(tok, seed=0)
    rm1 = save_pretrained(model, tok, root / "rm1")
    rm2 = save_pretrained(model, tok, root / "rm2")
    write_reward_statistics({"mean": 5.0, "std": 2.0, "count": 64}, rm2)
    model.config.pad_token_id = tok.pad_token_id
    chosen = score_texts(model.eval(), tok, rows, "chosen").double()
    rejected = score_texts(model, tok, rows, "rejected").double()
    data = root / "pairs.jsonl"
    extra = [{"prompt": [U, A, U], "chosen": [A], "rejected": [A]},
             {"chosen": [S, U, A], "rejected": [S, U, A]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows + extra))
    return {"rm1": str(rm1), "rm2": str(rm2), "rows": rows, "chosen": chosen, "rejected": rejected,
            "data": str(data)}


def run(*args):
    return main(["data", "filter-preferences", *args])


def test_command_two_reward_models_hand_checked(tiny_rms, tmp_path, capsys):
    out = tmp_path / "kept.jsonl"
    code = run("--input", tiny_rms["data"], "--out", str(out), "--reward-model", tiny_rms["rm1"],
               "--reward-model", tiny_rms["rm2"])
    assert code == 0, capsys.readouterr().err
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    diff = tiny_rms["chosen"] - tiny_rms["rejected"]
    assert len(kept) == 16  # 32 pairs + 2 multi-turn rows (dropped), floor(0.5 * 32)
    top = sorted(sorted(range(32), key=lambda i: -float(diff[i]))[:16])
    assert [r["prompt"] for r in kept] == [tiny_rms["rows"][i]["prompt"] for i in top]
    for row, i in zip(kept, top, strict=True):
        # rm2 = rm1 normalised with mean 5, std 2: its difference is diff / 2, the mean 0.75 diff
        assert row["preference_strength"] == pytest.approx(0.75 * float(diff[i]), abs=1e-5)
        c = float(tiny_rms["chosen"][i])
        assert row["chosen_score"] == pytest.approx((c + (c - 5.0) / 2.0) / 2.0, abs=1e-5)
    report = json.loads(report_path(out).read_text())
    assert report_path(out).name == "kept.filter_report.json"
    assert (report["n_rows"], report["n_single_turn"], report["n_multi_turn"], report["n_kept"]) == (34, 32, 2, 16)
    assert [m["normalized"] for m in report["reward_models"]] == [False, True]
    assert report["reward_models"][1]["mean"] == 5.0 and report["reward_models"][1]["std"] == 2.0
    assert "kept 16 of 34 rows" in capsys.readouterr().out
    # an existing output is refused (one line, exit 2); --overwrite replaces it
    assert run("--input", tiny_rms["data"], "--out", str(out), "--reward-model", tiny_rms["rm1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert run("--input", tiny_rms["data"], "--out", str(out), "--reward-model", tiny_rms["rm1"],
               "--keep-fraction", "0.25", "--overwrite") == 0
    assert len(out.read_text().splitlines()) == 8  # floor(0.25 * 32)


def test_command_writes_a_saved_datasets_folder(tiny_rms, tmp_path, capsys):
    out = tmp_path / "kept"
    assert run("--input", tiny_rms["data"], "--out", str(out), "--reward-model", tiny_rms["rm1"],
               "--keep-fraction", "1") == 0, capsys.readouterr().err
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 32 and {"preference_strength", "chosen_score", "rejected_score"} <= set(ds.column_names)
    diff = tiny_rms["chosen"] - tiny_rms["rejected"]
    assert ds["preference_strength"] == pytest.approx(diff.tolist(), abs=1e-5)  # one raw RM: the raw difference
    assert json.loads((tmp_path / "kept.filter_report.json").read_text())["n_kept"] == 32


@pytest.mark.parametrize(("args", "message"), [
    (["--input", "{tmp}/missing.jsonl"], "missing.jsonl: file not found"),
    (["--input", "{tmp}/norejected.jsonl"], "field 'rejected': missing dataset column 'rejected'"),
    (["--input", "{data}", "--keep-fraction", "0"], "--keep-fraction must be in (0, 1], got 0.0"),
    (["--input", "{data}", "--keep-fraction", "1.5"], "--keep-fraction must be in (0, 1], got 1.5"),
    (["--input", "{tmp}/multi.jsonl"], "no rows left: none of the 1 rows is a single-turn pair"),
    (["--input", "{data}", "--keep-fraction", "0.01"], "no rows left: keep fraction 0.01 of 32"),
    (["--input", "{data}", "--reward-model", "{tmp}/no_rm"], "no_rm: file not found"),
])
def test_command_bad_input_is_one_line(tiny_rms, tmp_path, capsys, args, message):
    (tmp_path / "norejected.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    (tmp_path / "multi.jsonl").write_text(json.dumps({"prompt": [U, A, U], "chosen": "a", "rejected": "b"}) + "\n")
    args = [a.format(tmp=tmp_path, data=tiny_rms["data"]) for a in args]
    if "--reward-model" not in args:
        args += ["--reward-model", tiny_rms["rm1"]]
    assert run(*args, "--out", str(tmp_path / "out.jsonl")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.filter_report.json").exists()


def test_reward_models_sharing_a_tokenizer_tokenize_each_response_once(monkeypatch):
    """The filter's scorers share a token cache: two reward models whose tokenizers agree tokenize every response
    once, and score exactly as each would alone; a model with another vocabulary tokenizes for itself."""
    from calrl.reward_modeling import filtering
    from calrl.reward_modeling.filtering import RewardModelScorer, TokenCache

    words = ["q", "good", "bad", "answer"]
    tok_a, tok_b = build_word_tokenizer([" ".join(words)]), build_word_tokenizer([" ".join(words)])
    tok_c = build_word_tokenizer([" ".join([*words, "other"])])
    rows = [{"prompt": "q ", "chosen": "good answer", "rejected": "bad"}, {"prompt": "q ", "chosen": "good",
                                                                          "rejected": "bad answer"}]
    models = [build_tiny_reward_model(t, seed=s).eval() for t, s in ((tok_a, 1), (tok_b, 2), (tok_c, 3))]
    alone = [torch.stack([score_texts(m, t, rows, c) for c in ("chosen", "rejected")])
             for m, t in zip(models, (tok_a, tok_b, tok_c))]
    calls = []
    real = filtering.tokenize_responses
    monkeypatch.setattr(filtering, "tokenize_responses",
                        lambda tok, r, column: calls.append(column) or real(tok, r, column))
    cache = TokenCache()
    scorers = [RewardModelScorer(m, t, normalize=False, token_cache=cache)
               for m, t in zip(models, (tok_a, tok_b, tok_c))]
    shared = [torch.stack([s(rows, c) for c in ("chosen", "rejected")]).float() for s in scorers]
    assert all(torch.equal(a, b) for a, b in zip(alone, shared))
    assert calls == ["chosen", "rejected", "chosen", "rejected"]  # tok_b reused tok_a's ids; tok_c its own
