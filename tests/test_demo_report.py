"""The demo's report reads on its own: every metric defined where it appears (with ``calrl eval``'s own
definitions, not a second copy), a legend on every plot, no stray markup in the HTML, and a one-seed run that
says plainly which claims it cannot support. Rendered from a study folder made by
``tests/demo_report_helpers.py`` (nothing is trained)."""

from __future__ import annotations

import html as html_text
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from demo_report_helpers import fake_study

from calrl.demo import report_plots
from calrl.demo.recipes import METHOD_NAMES, RL_POLICIES
from calrl.demo.report import DEMO_MEANINGS, HEADLINE_COLUMNS, fmt, readme_table, write_report
from calrl.eval.report import METRIC_MEANINGS, build_sections


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """The quick run (one seed, the main comparison) and a two-seed study of every policy, rendered."""
    out = {}
    for name, seeds, quick in (("quick", [0], True), ("full", [0, 1], False)):
        summary, layout = fake_study(tmp_path_factory.mktemp(name), seeds, quick=quick)
        write_report(summary, layout)
        out[name] = (summary, layout.out)
    return out


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("name", ["quick", "full"])
def test_every_metric_is_defined_under_its_table(studies, name):
    _, out = studies[name]
    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    held_out = _section(markdown, "Held-out results")
    for key, label in HEADLINE_COLUMNS:
        # calrl eval's definition, reused; the demo's own for what calrl eval does not compute
        meaning = DEMO_MEANINGS.get(key) or METRIC_MEANINGS["smece.value" if key == "smece" else key]
        assert f"- **{label}**: {meaning}" in held_out, label
        assert f"<li><b>{label}</b>: {html_text.escape(meaning)}</li>" in html, label
    differences = _section(markdown, "ECE difference to vanilla PPO, per seed")
    assert "- **seed k**: ECE(method) - ECE(PPO)" in differences and "- **holds" in differences
    probe = _section(markdown, "Reward models: confidence-bias probe (held-out correct-vs-wrong pairs)")
    for column in ("preference accuracy", "prefers high conf.", "mean r(high)-r(low)"):
        assert f"- **{column}**: " in probe, column
    slices = _section(markdown, "ECE per slice")
    assert "**fact-often**: well-known people" in slices and "**fact-never**: never-seen people" in slices


def test_the_definitions_are_the_ones_calrl_eval_shows():
    metrics = json.loads((Path(__file__).parent / "fixtures" / "eval_golden" / "expected_metrics.json").read_text())
    table = build_sections(metrics, {})[0].blocks[-1]
    meaning = table.header.index("meaning")
    shown = {row[1].strip("`"): row[meaning] for row in table.rows}
    assert all(shown[key] == meaning for key, meaning in METRIC_MEANINGS.items())
    assert {"ece", "smece.value", "brier", "auroc", "accuracy_answered", "refusal_rate", "mean_confidence"} \
        <= set(METRIC_MEANINGS)


def _figures(monkeypatch, build) -> list:
    """The matplotlib figures ``build()`` saves."""
    from matplotlib.figure import Figure

    saved, real = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig) or real(fig, *a, **k))
    build()
    return saved


def _legend_labels(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.mark.parametrize("name", ["quick", "full"])
def test_every_plot_has_a_legend(studies, name, tmp_path, monkeypatch):
    summary, _ = studies[name]
    (grid,) = _figures(monkeypatch, lambda: report_plots.plot_reliability_grid(summary, tmp_path / "r.png"))
    labels = _legend_labels(grid)
    assert any("calibrated" in t for t in labels) and any("accuracy of a confidence bin" in t for t in labels)
    sizes = [t for t in labels if "% of answers" in t]  # the dots' areas: a bin's share of the answers
    assert len(sizes) == len(report_plots.DOT_SHARES) >= 2
    (epochs,) = _figures(monkeypatch, lambda: report_plots.plot_ece_per_epoch(summary, tmp_path / "e.png"))
    labels = _legend_labels(epochs)
    assert {METHOD_NAMES[p] for p in RL_POLICIES if p in summary["policies"]} <= set(labels)
    assert ("range over seeds" in labels) == (len(summary["seeds"]) > 1)
    (curves,) = _figures(monkeypatch, lambda: report_plots.plot_risk_coverage(summary, tmp_path / "c.png"))
    labels = _legend_labels(curves)
    for policy, entry in summary["policies"].items():  # every policy, SFT included, with its all-items AURC
        assert f"{METHOD_NAMES[policy]} (AURC {fmt(entry['aurc_all_items']['mean'])})" in labels
    (ax,) = curves.axes
    assert ax.get_xlabel().startswith("coverage") and ax.get_ylabel().startswith("accuracy of the answered")
    assert ax.get_title().startswith("Risk-coverage over all held-out items")


def test_the_report_shows_the_selective_view_and_where_the_abstention_policy_abstains(studies):
    summary, out = studies["full"]
    markdown, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert (out / "plots" / "risk_coverage.png").is_file()
    title = "Selective prediction: accuracy of the answered against coverage (all held-out items)"
    assert f"![{title}](plots/risk_coverage.png)" in _section(markdown, title)
    assert "<img src='plots/risk_coverage.png'" in html
    header = next(line for line in _section(markdown, "Held-out results").splitlines() if line.startswith("| "))
    assert header.endswith("| mean conf. | AURC (all items) |")
    assert "- **AURC (all items)**: area under the risk-coverage curve over all held-out items" in markdown
    # the refusal rates per slice and seed: PPO-C + abstention, then SFT and PPO + correctness for contrast
    table = _section(markdown, "Where PPO-C + abstention abstains: refusal rate per slice, per seed")
    assert table.splitlines()[1] == "| policy | slice | seed 0 | seed 1 | mean ± std |"
    rows = [line for line in table.splitlines()[3:] if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == ["| PPO-C + abstention"] * 2 + ["| SFT (no RL)"] * 2 + \
        ["| PPO + correctness"] * 2
    # the fake policy abstains on every never-seen person (40 per slice) and on no well-known one
    assert "| PPO-C + abstention | fact-never | 1.000 (40/40) | 1.000 (40/40) |" in table
    assert "| PPO-C + abstention | fact-often | 0.000 (0/40) | 0.000 (0/40) |" in table
    assert summary["checks"]["ppo_c_abstain_abstains_where_it_cannot_know"]["per_seed"] == [True, True]
    assert "abstention_on_wrong_slices" not in summary["checks"]
    block = readme_table(summary)
    assert "| PPO-C + abstention | fact-never | 1.000 (40/40) |" in block and "plots/risk_coverage.png" in block
    # the quick run has no abstention policy: the curves, but no refusal table
    _, quick = studies["quick"]
    quick_md = (quick / "report.md").read_text()
    assert title in quick_md and "Where PPO-C + abstention abstains" not in quick_md


class _Text(HTMLParser):
    """The text a reader sees, and the text of each heading."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2", "h3"):
            self._in_heading = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3"):
            self._in_heading = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_heading:
            self.headings[-1] += data


@pytest.mark.parametrize("name", ["quick", "full"])
def test_no_stray_markup_in_the_html(studies, name):
    _, out = studies[name]
    html = (out / "report.html").read_text()
    seen = _Text()
    seen.feed(html)
    assert "Release gate (calrl compare)" in seen.headings  # its `calrl compare` shown as code
    assert "<h2>Release gate (<code>calrl compare</code>)</h2>" in html
    for piece in seen.text:
        assert "`" not in piece and "**" not in piece, piece


def test_the_one_seed_run_says_which_claims_it_cannot_support(studies):
    summary, out = studies["quick"]
    markdown = (out / "report.md").read_text()
    caveat = _section(markdown, "What one seed cannot show")
    for claim in ("in how many seeds a check holds", "spread over seeds", "interval over seeds"):
        assert claim in caveat, claim
    assert "quick run" in caveat
    assert "1 of 1 seeds" not in markdown and "over seeds [" not in markdown  # no count or interval over one seed
    assert "PASS (seed 0 only)" in markdown and "(every seed)" not in markdown
    assert "95% interval (seeds)" not in _section(markdown, "ECE difference to vanilla PPO, per seed")
    assert "±" not in _section(markdown, "Held-out results").split("\n- ")[0]
    assert "cannot support any claim about seeds" in readme_table(summary)
    # the accuracy claims: no verdict from 80 paired answers, said why, in the list and in the table
    assert "n/a (pooled answers): PPO-M: accuracy at most 2 points below PPO's" in markdown
    assert "no verdict: 80 paired answers cannot show it" in markdown
    assert "no verdict (n = 80)" in _section(markdown, "Accuracy difference to vanilla PPO (points)")
    assert "Tango's paired 95% interval" in readme_table(summary)


def test_a_study_of_several_seeds_has_no_one_seed_caveat(studies):
    summary, out = studies["full"]
    markdown = (out / "report.md").read_text()
    assert "What one seed cannot show" not in markdown and "cannot support" not in readme_table(summary)
    assert "2 of 2 seeds" in markdown and "95% interval (seeds)" in markdown and "(every seed)" in markdown


def test_only_vanilla_ppo_is_claimed_more_confident_on_every_slice(studies):
    """PPO + correctness is right every time on the well-known people, where its correctness term is constant: its
    overconfidence claims are the paired mean and the never-seen people, and the report says why no more."""
    summary, out = studies["full"]
    checks = summary["checks"]
    assert "ppo_more_confident_every_slice" in checks and "ppo_v_more_confident_every_slice" not in checks
    assert {"ppo_v_more_overconfident_than_sft", "ppo_v_more_confident_on_never_seen"} <= set(checks)
    markdown = (out / "report.md").read_text()
    assert "its correctness term is constant, and no claim is made there" in markdown


def test_a_policy_that_stopped_stating_confidence_fails_its_calibration_claims(studies):
    """An ECE over the few answers that still state a confidence is not the policy's calibration (a quick study's
    PPO-M stated one on 1 of its 120 answers and was '30% below' PPO): its claims fail in that seed, and a baseline
    that stopped gives its comparisons no verdict; the report names both."""
    import copy

    from calrl.demo.report_prose import stated_note
    from calrl.demo.summary import STATED_MIN, study_checks

    summary = copy.deepcopy(studies["full"][0])
    before = study_checks(summary)
    assert before["ppo_m_lower_ece_than_ppo"]["per_seed"][1] is not False
    summary["policies"]["ppo_m"]["per_seed"]["1"]["stated_rate"] = 1 / 120
    summary["policies"]["ppo"]["per_seed"]["0"]["stated_rate"] = STATED_MIN - 0.01
    after = study_checks(summary)
    assert after["ppo_m_lower_ece_than_ppo"]["per_seed"][1] is False
    assert after["ppo_m_lower_ece_than_ppo"]["per_seed"][0] is None  # its baseline stated too few in seed 0
    assert after["ppo_more_overconfident_than_sft"]["per_seed"][0] is False
    assert after["ppo_c_lower_ece_than_ppo"]["per_seed"] == [None, before["ppo_c_lower_ece_than_ppo"]["per_seed"][1]]
    note = stated_note(summary)
    assert "PPO-M in seed 1 (1% of its answers)" in note and "PPO in seed 0 (89% of its answers)" in note
    assert "Every policy here is above it" in stated_note(studies["full"][0])
