"""Held-out set loading: each standard set's mapping on hub-schema fixtures, local specs, bad specs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest

from calrl.data import heldout
from calrl.data.heldout import EvalItem, available_sets, get_heldout_set, load_eval_items
from calrl.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "heldout"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "heldout"
EXPECTED_SETS = {"gsm8k", "triviaqa", "sciq", "commonsense_qa", "truthful_qa", "mmlu_professional",
                 "bbh_object_counting"}


@pytest.fixture(autouse=True)
def hub_reachable(monkeypatch):
    """No network in tests: the hub probe answers "reachable" unless a test says otherwise, and the offline
    switches (set for the whole session by conftest) are off unless a test turns one on."""
    import datasets.config
    from huggingface_hub import constants

    from calrl.data import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.PROBE_TIMEOUT_S: True)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)


def load(spec: str, **kwargs) -> list[EvalItem]:
    return load_eval_items(spec, **kwargs)


def assert_well_formed(items: list[EvalItem]) -> None:
    assert items
    assert len({i.id for i in items}) == len(items)
    for item in items:
        assert item.question and all(isinstance(r, str) and r for r in item.reference)
        if item.choices is not None:
            letter, text = item.reference
            assert item.choices["ABCDEFGHIJ".index(letter)] == text
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in item.slice.items())


def test_all_standard_sets_are_defined_and_packaged():
    assert EXPECTED_SETS <= set(available_sets())
    for name in EXPECTED_SETS:
        defn = get_heldout_set(name)
        assert defn.name == name and defn.hub_id and defn.split


def test_gsm8k_mapping():
    items = load(f"gsm8k:{FIXTURES / 'gsm8k' / 'test.jsonl'}")
    assert_well_formed(items)
    assert [i.id for i in items] == [f"gsm8k-test-{k}" for k in range(6)]
    assert items[0].reference == ["18"] and items[1].reference == ["3"]
    assert items[0].question.startswith("Janet")
    assert items[0].slice == {"reasoning_steps": "2"} and items[1].slice == {"reasoning_steps": "2"}
    assert items[0].choices is None
    rows = [json.loads(line) for line in (FIXTURES / "gsm8k" / "test.jsonl").read_text().splitlines()]
    for item, row in zip(items, rows, strict=True):  # steps = solution lines before '#### '
        assert int(item.slice["reasoning_steps"]) == len(row["answer"].split("\n")) - 1


def test_triviaqa_mapping_uses_value_and_aliases():
    items = load(f"triviaqa:{FIXTURES / 'triviaqa'}")
    assert_well_formed(items)
    assert [i.id for i in items][:2] == ["calrl_tqa_0001", "calrl_tqa_0002"]
    assert items[0].reference == ["Mars", "Planet Mars", "Fourth planet", "mars", "planet mars", "fourth planet"]
    assert items[1].reference == ["6", "six"]
    assert [i.slice["answer_type"] for i in items] == ["WikipediaEntity", "Numerical", "WikipediaEntity",
                                                       "WikipediaEntity", "FreeForm"]


def test_sciq_shuffles_options_with_a_fixed_seed():
    path = FIXTURES / "sciq" / "test.jsonl"
    items = load(f"sciq:{path}")
    assert_well_formed(items)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for item, row in zip(items, rows, strict=True):
        assert sorted(item.choices) == sorted([row["correct_answer"], row["distractor1"], row["distractor2"],
                                               row["distractor3"]])
        assert item.reference[1] == row["correct_answer"]
    assert len({i.reference[0] for i in items}) > 1  # not always the same letter
    again = load(f"sciq:{path}")
    assert [(i.choices, i.reference) for i in again] == [(i.choices, i.reference) for i in items]
    assert load(f"sciq:{path}", limit=2)[1].choices == items[1].choices  # per-item seed: limit-independent


def test_commonsense_qa_mapping():
    items = load(f"commonsense_qa:{FIXTURES / 'commonsense_qa' / 'validation.jsonl'}")
    assert_well_formed(items)
    assert items[0].id == "calrl-csqa-0001"
    assert items[0].reference == ["B", "refrigerator"] and len(items[0].choices) == 5
    assert items[2].reference == ["E", "scissors"]
    assert all(i.slice == {} for i in items)


def test_truthful_qa_mapping_shuffles_mc1():
    path = FIXTURES / "truthful_qa" / "validation.jsonl"
    items = load(f"truthful_qa:{path}")
    assert_well_formed(items)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for item, row in zip(items, rows, strict=True):
        mc1 = row["mc1_targets"]
        assert item.reference[1] == mc1["choices"][mc1["labels"].index(1)]
        assert sorted(item.choices) == sorted(mc1["choices"])
    assert {i.reference[0] for i in items} != {"A"}
    assert [i.id for i in items] == [f"truthful_qa-validation-{k}" for k in range(6)]


def test_truthful_qa_category_slice_when_present(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "truthful_qa" / "validation.jsonl").read_text().splitlines()]
    for k, row in enumerate(rows):
        row["category"] = "Misconceptions" if k % 2 else "Law"
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "tqa"))
    items = load(f"truthful_qa:{tmp_path / 'tqa'}")
    assert [i.slice["category"] for i in items] == ["Law", "Misconceptions"] * 3


def test_mmlu_original_csv_folder_and_hub_schema_agree():
    from_csv = load(f"mmlu_professional:{FIXTURES / 'mmlu_professional'}")
    assert_well_formed(from_csv)
    assert Counter(i.slice["domain"] for i in from_csv) == {"accounting": 2, "law": 2, "medicine": 2,
                                                            "psychology": 2}
    assert from_csv[0].id == "mmlu_professional-professional_accounting-test-0"
    assert from_csv[0].reference == ["A", "164%"]
    assert from_csv[0].choices == ["164%", "1.64%", "0.45%", "183%"]
    from_hub = load(f"mmlu_professional:{FIXTURES / 'mmlu_professional_hub' / 'test.jsonl'}")
    assert [(i.question, i.reference, i.choices, i.slice) for i in from_hub] == \
        [(i.question, i.reference, i.choices, i.slice) for i in from_csv]


def test_folder_keeps_the_requested_split(tmp_path):
    import shutil

    folder = tmp_path / "mmlu"
    shutil.copytree(FIXTURES / "mmlu_professional", folder)
    shutil.copy(folder / "professional_law_test.csv", folder / "professional_law_dev.csv")
    (folder / "notes.jsonl").write_text("{}\n")
    test = load(f"mmlu_professional:{folder}")
    assert len(test) == 8 and all("-test-" in i.id for i in test)
    dev = load(f"mmlu_professional:{folder}", split="dev")
    assert [i.id for i in dev] == ["mmlu_professional-professional_law-dev-0", "mmlu_professional-professional_law-dev-1"]


def test_mmlu_single_subject_file_keeps_its_config_in_ids():
    items = load(f"mmlu_professional:{FIXTURES / 'mmlu_professional' / 'professional_law_test.csv'}")
    assert [i.id for i in items] == [f"mmlu_professional-professional_law-test-{k}" for k in range(2)]
    assert {i.slice["domain"] for i in items} == {"law"}


def test_bbh_bigbench_json_and_lukaemon_schema():
    big = load(f"bbh_object_counting:{FIXTURES / 'bbh_object_counting' / 'task.json'}")
    assert_well_formed(big)
    assert big[0].reference == ["three", "3"] and big[2].reference == ["eighteen", "18"]
    hub = load(f"bbh_object_counting:{FIXTURES / 'bbh_object_counting' / 'lukaemon_test.jsonl'}")
    assert [sorted(i.reference) for i in hub] == [sorted(i.reference) for i in big]
    assert [i.question for i in hub] == [i.question for i in big]


def test_hub_path_calls_load_dataset_with_hub_id_config_and_split(monkeypatch):
    rows = [json.loads(line) for line in (FIXTURES / "gsm8k" / "test.jsonl").read_text().splitlines()]
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = load("gsm8k", limit=3)
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [i.id for i in items] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    assert items == load(f"gsm8k:{FIXTURES / 'gsm8k'}", limit=3)  # hub and local copy agree


def test_hub_path_loads_every_config(monkeypatch):
    rows = [json.loads(line) for line in (FIXTURES / "mmlu_professional_hub" / "test.jsonl").read_text().splitlines()]
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([r for r in rows if r["subject"] == name])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = load("mmlu_professional", split="test")
    assert [c[1] for c in calls] == ["professional_accounting", "professional_law", "professional_medicine",
                                     "professional_psychology"]
    assert len(items) == 8 and items[2].id == "mmlu_professional-professional_law-test-0"


def test_unreachable_hub_is_a_one_line_input_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", "/nonexistent-calrl-cache")
    with pytest.raises(InputError) as err:
        load("sciq")
    message = str(err.value)
    assert "\n" not in message and "allenai/sciq" in message and "sciq:PATH" in message


def _fake_hub(monkeypatch, rows, calls, *, offline_seen=None):
    import datasets.config

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if offline_seen is not None:
            offline_seen.append(datasets.config.HF_HUB_OFFLINE)
        if datasets.config.HF_HUB_OFFLINE:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub (OfflineModeIsEnabled)")
        return datasets.Dataset.from_list([r for r in rows if name is None or r.get("subject", name) == name])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)


def test_unreachable_hub_fails_at_once_in_offline_mode(monkeypatch):
    from calrl.data import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.PROBE_TIMEOUT_S: False)
    calls, offline_seen = [], []
    _fake_hub(monkeypatch, [], calls, offline_seen=offline_seen)
    with pytest.raises(InputError) as err:
        load("gsm8k")
    message = str(err.value)
    assert "\n" not in message and "unreachable" in message and "gsm8k:PATH" in message
    assert offline_seen == [True]  # loaded from the cache only: no retries against the network
    import datasets.config
    assert datasets.config.HF_HUB_OFFLINE is False  # offline mode is switched off again afterwards


def test_offline_switch_is_named_and_skips_the_probe(monkeypatch):
    from calrl.data import hub

    def probe(timeout=hub.PROBE_TIMEOUT_S):
        raise AssertionError("the hub must not be probed when offline mode is on")

    monkeypatch.setattr(hub, "hub_reachable", probe)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_hub(monkeypatch, [], [])
    with pytest.raises(InputError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        load("sciq")


def test_cached_set_still_loads_when_the_hub_is_unreachable(monkeypatch):
    import datasets.config

    from calrl.data import hub

    rows = [json.loads(line) for line in (FIXTURES / "gsm8k" / "test.jsonl").read_text().splitlines()]
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.PROBE_TIMEOUT_S: False)

    def cached_load_dataset(path, name=None, split=None, **kwargs):
        assert datasets.config.HF_HUB_OFFLINE is True
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", cached_load_dataset)
    assert len(load("gsm8k", limit=2)) == 2


def test_hub_probe_uses_the_endpoint_and_respects_proxies(monkeypatch):
    import socket

    from calrl.data import hub

    seen = []

    def refuse(address, timeout=None):
        seen.append((address, timeout))
        raise OSError("no network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert hub.probe_hub() is False and seen == [(hub.hub_endpoint(), hub.PROBE_TIMEOUT_S)]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert hub.probe_hub() is True and len(seen) == 1


def test_lm_eval_aliases_name_the_same_data(monkeypatch):
    rows = [json.loads(line) for line in (FIXTURES / "mmlu_professional_hub" / "test.jsonl").read_text().splitlines()]
    calls = []
    _fake_hub(monkeypatch, rows, calls)
    law = load("mmlu_professional_law")
    assert [c[1] for c in calls] == ["professional_law"]
    whole = {i.id: i for i in load("mmlu_professional")}
    assert law and all(whole[i.id] == i for i in law)  # same ids and items as in the whole set
    assert {i.slice["domain"] for i in law} == {"law"}
    local = load(f"mmlu_professional_law:{FIXTURES / 'mmlu_professional'}")
    assert [i.id for i in local] == [i.id for i in law]
    assert get_heldout_set("truthfulqa_mc1").name == "truthful_qa"
    assert get_heldout_set("bbh_zeroshot_object_counting").name == "bbh_object_counting"
    bbh = load(f"bbh_zeroshot_object_counting:{FIXTURES / 'bbh_object_counting' / 'lukaemon_test.jsonl'}")
    assert bbh == load(f"bbh_object_counting:{FIXTURES / 'bbh_object_counting' / 'lukaemon_test.jsonl'}")
    with pytest.raises(InputError, match="did you mean mmlu_professional_law"):
        load("mmlu_profesional_law")


def test_bad_alias_definitions():
    base = {"name": "x", "hub_id": "h/x", "configs": ["a", "b"], "split": "test", "question": "q",
            "answer": {"kind": "text", "field": "a"}}
    assert heldout.parse_definition({**base, "aliases": {"x_a": ["a"], "x_all": None}}, source="x.yaml").aliases \
        == {"x_a": ("a",), "x_all": None}
    with pytest.raises(InputError, match="x.yaml: field 'aliases'"):
        heldout.parse_definition({**base, "aliases": {"x_c": ["c"]}}, source="x.yaml")
    with pytest.raises(InputError, match="field 'aliases'"):
        heldout.parse_definition({**base, "aliases": ["x_a"]}, source="x.yaml")


def test_dataset_table_lists_every_set_with_its_aliases():
    rows = {r["name"]: r for r in heldout.dataset_table()}
    assert set(rows) == EXPECTED_SETS
    assert "mmlu_professional_law" in rows["mmlu_professional"]["aliases"]
    assert "truthfulqa_mc1" in rows["truthful_qa"]["aliases"]
    assert rows["gsm8k"]["hub"] == "openai/gsm8k (main)" and rows["gsm8k"]["slices"] == "reasoning_steps"


def test_stratified_limit_covers_every_slice_and_is_seeded():
    items = load(f"mmlu_professional:{FIXTURES / 'mmlu_professional'}")  # 2 items in each of 4 subjects
    assert {i.slice["domain"] for i in load(f"mmlu_professional:{FIXTURES / 'mmlu_professional'}", limit=4)} \
        == {"accounting"} | {"law"}  # the first N: two subjects only
    sample = load(f"mmlu_professional:{FIXTURES / 'mmlu_professional'}", limit=4, sample_seed=0)
    assert Counter(i.slice["domain"] for i in sample) == {"accounting": 1, "law": 1, "medicine": 1, "psychology": 1}
    again = load(f"mmlu_professional:{FIXTURES / 'mmlu_professional'}", limit=4, sample_seed=0)
    assert [i.id for i in again] == [i.id for i in sample]
    seeds = {tuple(i.id for i in load(f"mmlu_professional:{FIXTURES / 'mmlu_professional'}", limit=4,
                                      sample_seed=s)) for s in range(8)}
    assert len(seeds) > 1  # another seed, another subset or order
    assert len(load(f"mmlu_professional:{FIXTURES / 'mmlu_professional'}", limit=50, sample_seed=1)) == len(items)


def test_stratified_sample_is_proportional():
    from calrl.data.sampling import stratified_sample

    items = [EvalItem(f"{g}{k}", "q", ["a"], slice={"g": g}) for g, n in (("big", 60), ("mid", 30), ("tiny", 10))
             for k in range(n)]
    for n in (3, 10, 20, 37, 100):
        sample = stratified_sample(items, n, seed=n)
        counts = Counter(i.slice["g"] for i in sample)
        assert len(sample) == n and len({i.id for i in sample}) == n
        assert counts["tiny"] >= 1 and counts["big"] >= counts["mid"] >= counts["tiny"]
    assert Counter(i.slice["g"] for i in stratified_sample(items, 20, seed=0)) == {"big": 12, "mid": 6, "tiny": 2}
    two = stratified_sample(items, 2, seed=0)  # fewer than the slices: proportional, the largest first
    assert len(two) == 2 and "tiny" not in {i.slice["g"] for i in two}


def test_generic_local_files(tmp_path):
    rows = [
        {"id": "q1", "question": "2+2?", "reference": "4", "slice": {"domain": "math"}},
        {"question": "Capital of France?", "reference": ["Paris", "paris"], "choices": ["Paris", "Rome"],
         "slice": "geo"},
    ]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load(str(tmp_path / "items.jsonl"))
    assert items[0] == EvalItem("q1", "2+2?", ["4"], None, {"domain": "math"})
    assert items[1] == EvalItem("items-1", "Capital of France?", ["Paris", "paris"], ["Paris", "Rome"],
                                {"slice": "geo"})
    (tmp_path / "items.csv").write_text(
        'id,question,reference,choices,slice\nq1,2+2?,4,,\nq2,Pick one,"[""A"", ""x""]","[""x"", ""y""]",'
        '"{""domain"": ""toy""}"\n')
    csv_items = load(str(tmp_path / "items.csv"))
    assert csv_items[1] == EvalItem("q2", "Pick one", ["A", "x"], ["x", "y"], {"domain": "toy"})
    datasets.Dataset.from_list([{"question": "q?", "reference": ["a"]}]).to_parquet(str(tmp_path / "i.parquet"))
    assert load(str(tmp_path / "i.parquet")) == [EvalItem("i-0", "q?", ["a"])]
    ds = datasets.DatasetDict({"test": datasets.Dataset.from_list([{"question": "q?", "reference": "a"}]),
                               "dev": datasets.Dataset.from_list([{"question": "d?", "reference": "b"}])})
    ds.save_to_disk(str(tmp_path / "saved"))
    assert load(str(tmp_path / "saved"), split="dev")[0].question == "d?"
    with pytest.raises(InputError, match="split"):
        load(str(tmp_path / "saved"))
    assert len(load(str(tmp_path / "items.jsonl"), limit=1)) == 1


@pytest.mark.parametrize(("content", "match"), [
    ('{"question": "q", "reference": "a"}\n{"question": "q2"\n', r"items\.jsonl:2: malformed JSON"),
    ('{"question": "q", "reference": "a"}\n{"question": "q2"}\n', r"items\.jsonl:2: field 'reference'"),
    ('{"reference": "a"}\n', r"items\.jsonl:1: field 'question'"),
    ('{"question": "q", "reference": "a"}\n\n{"question": "q2", "reference": 3.5}\n{"question": ""}\n',
     r"items\.jsonl:4: field 'question': empty"),
    ('{"id": "x", "question": "q", "reference": "a"}\n{"id": "x", "question": "q", "reference": "a"}\n',
     "duplicate id 'x'"),
    ("\n", "no items"),
])
def test_bad_generic_files(tmp_path, content, match):
    (tmp_path / "items.jsonl").write_text(content)
    with pytest.raises(InputError, match=match):
        load(str(tmp_path / "items.jsonl"))


def test_bad_specs(tmp_path):
    with pytest.raises(InputError, match="neither an existing file"):
        load("no_such_set")
    with pytest.raises(InputError, match="no such file"):
        load(f"gsm8k:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(InputError, match="give the path"):
        load("gsm8k:")
    with pytest.raises(InputError, match="limit"):
        load(f"gsm8k:{FIXTURES / 'gsm8k'}", limit=0)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported file type"):
        load(str(tmp_path / "x.txt"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="save_to_disk"):
        load(str(tmp_path / "plain"))


def test_wrong_schema_for_a_named_set_names_the_row_and_field(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(InputError, match=r"row 0: no '####' marker.*openai/gsm8k"):
        load(f"gsm8k:{tmp_path / 't.jsonl'}")
    (tmp_path / "s.jsonl").write_text(json.dumps({"question": "q", "correct_answer": "a"}) + "\n")
    with pytest.raises(InputError, match="field 'distractor1'"):
        load(f"sciq:{tmp_path / 's.jsonl'}")


def test_definition_validation():
    with pytest.raises(InputError, match="kind"):
        heldout.parse_definition({"name": "x", "hub_id": "a/b", "configs": [None], "split": "test",
                                  "question": "q", "answer": {"kind": "nope"}}, source="x.yaml")
    with pytest.raises(InputError, match="unknown key"):
        heldout.parse_definition({"name": "x", "hub_id": "a/b", "configs": [None], "split": "test",
                                  "question": "q", "answer": {"kind": "text", "field": "a"}, "extra": 1},
                                 source="x.yaml")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/heldout is absent")
def test_real_offline_copies_load_through_name_path():
    expected = {
        "gsm8k": (SHARED / "gsm8k", 1319),
        "mmlu_professional": (SHARED / "mmlu_professional", 282 + 1534 + 272 + 612),
        "truthful_qa": (SHARED / "truthful_qa", 817),
        "bbh_object_counting": (SHARED / "bbh_object_counting" / "task.json", 1000),
    }
    for name, (path, count) in expected.items():
        items = load(f"{name}:{path}")
        assert len(items) == count, name
        assert_well_formed(items)
    domains = Counter(i.slice["domain"] for i in load(f"mmlu_professional:{SHARED / 'mmlu_professional'}"))
    assert domains == {"accounting": 282, "law": 1534, "medicine": 272, "psychology": 612}
    steps = Counter(i.slice["reasoning_steps"] for i in load(f"gsm8k:{SHARED / 'gsm8k'}"))
    assert sum(steps.values()) == 1319 and len(steps) >= 5
