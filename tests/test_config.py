from dataclasses import dataclass, field
from typing import Literal

import pytest

from calrl.config import apply_overrides, build, load_yaml
from calrl.errors import ConfigError


@dataclass
class Inner:
    r: int = 8
    targets: list[str] = field(default_factory=lambda: ["q_proj"])


@dataclass
class Section:
    name: str
    lr: float = 1e-5
    variant: Literal["none", "threshold", "difference"] = "none"
    steps: int | None = None
    lora: Inner | None = None


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_build_reads_types_and_nested_dataclasses(tmp_path):
    data = load_yaml(write(tmp_path, "s:\n  name: x\n  lr: 1e-4\n  variant: threshold\n  lora:\n    r: 4\n"))
    cfg = build(Section, data["s"], section="s")
    assert cfg.lr == 1e-4 and cfg.variant == "threshold" and cfg.lora == Inner(r=4)


def test_unknown_key_names_file_line_and_key(tmp_path):
    p = write(tmp_path, "s:\n  name: x\n  lrr: 3\n")
    with pytest.raises(ConfigError) as exc:
        build(Section, load_yaml(p)["s"], path=str(p), section="s")
    assert str(exc.value) == f"{p}:3: unknown key 's.lrr' (did you mean lr?)"


@pytest.mark.parametrize("text, message", [
    ("s:\n  name: x\n  steps: many\n", "key 's.steps' must be"),
    ("s:\n  name: x\n  variant: other\n", "key 's.variant' must be"),
    ("s:\n  lr: 1\n", "missing required key 's.name'"),
    ("s:\n  name: [1\n", "invalid YAML"),
])
def test_bad_values_are_one_line_errors(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        build(Section, load_yaml(p)["s"], path=str(p), section="s")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_overrides_set_nested_keys_with_yaml_values(tmp_path):
    data = load_yaml(write(tmp_path, "s:\n  name: x\n"))
    apply_overrides(data, ["s.lr=0.5", "s.lora.r=2", "s.steps=null"])
    cfg = build(Section, data["s"], section="s")
    assert cfg.lr == 0.5 and cfg.lora.r == 2 and cfg.steps is None
    with pytest.raises(ConfigError):
        apply_overrides(data, ["s.lr"])


@dataclass
class Named:
    run_name: str = "x"
    flag: bool = False


def test_numbers_are_accepted_as_text_for_string_keys_but_booleans_are_not(tmp_path):
    assert build(Named, load_yaml(write(tmp_path, "s:\n  run_name: 2024\n"))["s"]).run_name == "2024"
    assert build(Named, load_yaml(write(tmp_path, "s:\n  run_name: 0.3\n"))["s"]).run_name == "0.3"
    with pytest.raises(ConfigError, match="key 'run_name' must be str"):
        build(Named, load_yaml(write(tmp_path, "s:\n  run_name: yes\n"))["s"])


def test_a_wrong_choice_lists_the_choices_with_a_did_you_mean():
    @dataclass
    class Section:
        style: Literal["calrl", "standard", "cot"] = "calrl"
        parser: Literal["calrl", "reference"] | None = None

    with pytest.raises(ConfigError, match=r"key 'eval\.style' must be one of 'calrl', 'standard', 'cot', got str "
                                          r"'cott' \(did you mean 'cot'\?\)"):
        build(Section, {"style": "cott"}, section="eval")
    with pytest.raises(ConfigError, match=r"must be one of 'calrl', 'reference' or null, got str 'refrence' "
                                          r"\(did you mean 'reference'\?\)"):
        build(Section, {"parser": "refrence"}, section="eval")
