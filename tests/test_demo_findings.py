"""The demo reproduces the paper's six findings in miniature: models trained in the demo world by the workflow,
evaluated by the unchanged rules, each finding checked with its margin (demo/config.yaml report.findings)."""

import json

import pytest

from conftest import DEMO

FINDINGS = [f["name"] for f in DEMO["report"]["findings"]]


@pytest.fixture(scope="module")
def checked(demo_run):
    return {f["finding"]: f for f in json.loads((demo_run / "results/report/findings.json").read_text())}


def test_six_findings_are_configured():
    assert len(FINDINGS) == 6


@pytest.mark.parametrize("name", FINDINGS)
@pytest.mark.slow
def test_demo_shows_the_finding(checked, name):
    finding = checked[name]
    failed = [f"{c['check']}: ours {c['ours']}" for c in finding["checks"] if not c["holds"]]
    assert finding["holds"], f"{name} does not hold: {failed}"


@pytest.mark.slow
def test_summary_page_shows_the_findings(demo_run):
    html = (demo_run / "results/report/summary.html").read_text()
    assert "Findings" in html and "findings hold" in html and "Spearman 0.76" in html


@pytest.mark.slow
def test_each_comparison_of_two_accuracies_carries_its_paired_interval(checked):
    for finding in checked.values():
        for check in finding["checks"]:
            if "spearman_r" in check["check"]:
                assert check["ci95"] is None  # correlations carry none
                continue
            low, high = check["ci95"]
            assert low <= check["measured"] <= high, check["check"]
            assert check["holds_across_ci"] == (low >= check["required"])
