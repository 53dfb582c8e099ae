"""``calrl compare`` and ``calrl recalibrate`` write what they wrote before their code moved from the CLI
modules into :mod:`calrl.gate` and :mod:`calrl.recalibration` (commit b919985; the runs and inputs are
``tests/cli_golden.py``'s, the expected files are in ``tests/fixtures/cli_golden/expected``).

Each file is compared as text with its numbers taken out: what remains (keys and their order, indentation,
strings, integers, booleans, nulls, Markdown and HTML) must be byte-identical, and the numbers taken out
must agree number by number. Floats are not compared as text because their last bits depend on the CPU's
math path (``tests/test_eval_golden.py``): a float written by ``json`` (outside a JSON string) must agree to
:data:`FLOAT_REL`, or :data:`FIT_REL` in the recalibration runs, whose temperature is found by a golden-section
search whose last steps compare values equal up to rounding; a number formatted for people (in a message,
Markdown, HTML) may differ by one unit in its last digit (a value on a rounding boundary).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from cli_golden import HERE, run_all, strip_png

from calrl.cli.main import main

EXPECTED = HERE / "expected"
FLOAT_REL, FLOAT_ABS = 1e-12, 1e-15
FIT_REL = 1e-6
CASES = sorted(str(p.relative_to(EXPECTED)) for p in EXPECTED.rglob("*") if p.is_file())

_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')
_SHOWN_FLOAT = re.compile(r"[-+]?\d+\.\d+")


def _shown_floats(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``text`` with every decimal number formatted for people replaced by ``#`` and the numbers
    (as ("shown", text))."""
    found: list[tuple[str, str]] = []

    def take(match: re.Match) -> str:
        found.append(("shown", match.group()))
        return "#"

    return _SHOWN_FLOAT.sub(take, text), found


def split_numbers(text: str, json_like: bool) -> tuple[str, list[tuple[str, str]]]:
    """(skeleton, numbers): JSON floats outside strings become ``@`` ("json", repr); decimals shown to people
    (inside JSON strings, or anywhere in Markdown and HTML) become ``#``."""
    if not json_like:
        return _shown_floats(text)
    parts, numbers, end = [], [], 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        parts.append(text[end:match.start()])
        if token.startswith('"'):
            skeleton, shown = _shown_floats(token)
            parts.append(skeleton)
            numbers += shown
        elif "." in token or "e" in token.lower():
            parts.append("@")
            numbers.append(("json", token))
        else:
            parts.append(token)  # an integer: compared exactly
        end = match.end()
    parts.append(text[end:])
    return "".join(parts), numbers


def number_differences(got: list[tuple[str, str]], want: list[tuple[str, str]], rel: float) -> list[str]:
    out = []
    for i, ((kind, g), (_, w)) in enumerate(zip(got, want, strict=True)):
        if kind == "json":
            same = math.isclose(float(g), float(w), rel_tol=rel, abs_tol=FLOAT_ABS)
        else:  # one unit in the last shown digit
            digits = len(w.split(".")[1])
            same = len(g.split(".")[1]) == digits and abs(float(g) - float(w)) <= 1.01 * 10 ** -digits
        if not same:
            out.append(f"number {i}: {g} != {w}")
    return out


def compare_texts(got: str, want: str, *, json_like: bool, rel: float) -> list[str]:
    """Where ``got`` differs from ``want`` (see the module docstring); [] when it does not."""
    got_skeleton, got_numbers = split_numbers(got, json_like)
    want_skeleton, want_numbers = split_numbers(want, json_like)
    if got_skeleton != want_skeleton:
        at = next((i for i, (a, b) in enumerate(zip(got_skeleton, want_skeleton)) if a != b),
                  min(len(got_skeleton), len(want_skeleton)))
        return [f"text differs at {at}: {got_skeleton[at:at + 80]!r} != {want_skeleton[at:at + 80]!r}"]
    if len(got_numbers) != len(want_numbers):
        return [f"{len(got_numbers)} numbers != {len(want_numbers)}"]
    return number_differences(got_numbers, want_numbers, rel)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return run_all(main, tmp_path_factory.mktemp("cli_golden"))


def test_every_run_writes_the_same_files(outputs: dict[str, Path]) -> None:
    for name, out in outputs.items():
        written = sorted(p.name for p in out.iterdir())
        kept = sorted(p.name for p in (EXPECTED / name).iterdir())
        assert [n for n in written if not n.endswith(".png")] == kept
        for png in (p for p in out.iterdir() if p.suffix == ".png"):
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case", CASES)
def test_output_is_what_the_code_before_the_move_wrote(outputs: dict[str, Path], case: str) -> None:
    run, name = case.split("/", 1)
    got = (outputs[run] / name).read_text(encoding="utf-8")
    if name.endswith(".html"):
        got = strip_png(got)
    want = (EXPECTED / case).read_text(encoding="utf-8")
    rel = FLOAT_REL if run.startswith("compare") else FIT_REL
    assert compare_texts(got, want, json_like=name.endswith((".json", ".jsonl")), rel=rel) == []


def test_the_comparison_catches_what_it_must() -> None:
    """Not loose: a key moved, an integer, a float off in its 11th digit, a shown number off by two units,
    a changed word all fail; the last bits of a float and a shown rounding flip pass."""
    want = '{\n  "a": 0.14583333333333348,\n  "n": 145,\n  "m": "ECE 0.1458 to 0.3251"\n}\n'

    def check(got: str) -> list[str]:
        return compare_texts(got, want, json_like=True, rel=FLOAT_REL)

    assert check(want) == []
    assert check(want.replace("0.14583333333333348", "0.1458333333333335")) == []
    assert check(want.replace("0.3251", "0.3252")) == []
    assert check(want.replace("0.14583333333333348", "0.14583333334333348")) != []
    assert check(want.replace("145", "146")) != []
    assert check(want.replace("0.3251", "0.3253")) != []
    assert check(want.replace("ECE", "MCE")) != []
    assert check('{\n  "n": 145,\n  "a": 0.14583333333333348,\n  "m": "ECE 0.1458 to 0.3251"\n}\n') != []
    assert check(want.replace("0.14583333333333348", "null")) != []
    assert compare_texts("| ECE | 0.1458 |", "| ECE | 0.1459 |", json_like=False, rel=FLOAT_REL) == []
    assert compare_texts("| ECE | 0.1458 |", "| ECE | 0.1468 |", json_like=False, rel=FLOAT_REL) != []
