"""95 % bootstrap intervals: per score over items, and paired per finding check (docs/protocol.md#confidence-intervals)."""

import math

import numpy as np
import pandas as pd
import pytest

from vlmrepro.findings import evaluate_check
from vlmrepro.intervals import accuracy_interval, difference_interval, per_item
from vlmrepro.scoring import score_outputs
from vlmrepro.tables import build_table


def _rows(outcomes, start=0):
    return [
        {"row": start + i, "item": i, "label": "ant", "pred": "ant" if ok else "bee", "status": "ok"}
        for i, ok in enumerate(outcomes)
    ]


def test_score_interval_is_seeded_and_as_wide_as_the_normal_approximation():
    outcomes = np.random.default_rng(3).random(2000) < 0.3
    score = score_outputs(_rows(outcomes))
    low, high = score["accuracy_ci95"]
    assert low < score["accuracy"] < high
    normal = 2 * 1.96 * math.sqrt(0.3 * 0.7 / 2000) * 100  # ~4.0 points
    assert 0.8 * normal < high - low < 1.2 * normal
    assert score_outputs(_rows(outcomes))["accuracy_ci95"] == [low, high]  # same resamples on every run
    assert per_item(score, "accuracy") == {i: int(ok) for i, ok in enumerate(outcomes)}


def test_constant_outcomes_have_a_point_interval_and_one_item_none():
    assert accuracy_interval([1, 1, 1]) == [100.0, 100.0]
    assert accuracy_interval([0, 0]) == [0.0, 0.0]
    assert accuracy_interval([1]) == [100.0, 100.0]
    assert score_outputs(_rows([True, False]))["accuracy_ci95"] == [0.0, 100.0]


def test_paired_difference_uses_the_common_rows_only():
    rng = np.random.default_rng(0)
    left = {r: int(v) for r, v in enumerate(rng.random(500) < 0.7)}
    right = {r: int(v) for r, v in enumerate(rng.random(600) < 0.4)}
    result = difference_interval(left, right)
    assert result["paired_items"] == 500
    low, high = result["ci95"]
    measured = 100 * (np.mean([left[r] for r in range(500)]) - np.mean([right[r] for r in range(500)]))
    assert low < measured < high and low > 15
    assert difference_interval(left, left)["ci95"] == [0.0, 0.0]  # identical outcomes: no spread at all
    unpaired = difference_interval(left, {r + 1000: v for r, v in right.items()})
    assert unpaired["paired_items"] == 0 and unpaired["ci95"][0] > 15


def test_finding_checks_carry_the_interval_of_what_they_measure():
    strong, weak = _rows([True] * 80 + [False] * 20), _rows([True] * 30 + [False] * 70)
    scores = {
        "results/scores/a/d/s.json": score_outputs(strong),
        "results/scores/b/d/s.json": score_outputs(weak),
    }
    a, b = {"model": "a", "dataset": "d", "setting": "s"}, {"model": "b", "dataset": "d", "setting": "s"}
    above = evaluate_check({"left": a, "op": ">", "right": b, "margin": 10}, scores)
    assert above["holds"] and above["paired_items"] == 100
    assert above["ci95"][0] < above["measured"] < above["ci95"][1] and above["holds_across_ci"]
    below = evaluate_check({"left": b, "op": "<", "right": a, "margin": 10}, scores)
    assert below["ci95"] == pytest.approx(above["ci95"])  # the same quantity, a − b, from the other side
    tight = evaluate_check({"left": a, "op": ">", "right": b, "margin": 45}, scores)
    assert tight["holds"] and not tight["holds_across_ci"]  # 50 points measured, but not across the interval
    number = evaluate_check({"left": a, "op": ">", "right": 60}, scores)
    low, high = scores["results/scores/a/d/s.json"]["accuracy_ci95"]
    assert number["ci95"] == pytest.approx([low - 60, high - 60])
    gap = {"gap_closed": {"start": b, "end": a, "value": a}, "at_least": 0.5}
    assert evaluate_check(gap, scores)["ci95"] == pytest.approx([1.0, 1.0])


def test_a_checks_difference_is_measured_on_the_rows_its_interval_pairs():
    """Probabilistic inference scores the first 1,000 items, open world every one: the difference and its interval
    come from the same paired rows, not the difference of the two whole-file accuracies."""
    first, later = [True] * 10 + [False] * 10, [False] * 80
    whole = _rows(first + later)  # 10 / 100 correct overall, 10 / 20 on the first 20 rows
    limited = _rows([True] * 5 + [False] * 15)  # 5 / 20, on the first 20 rows only
    scores = {"results/scores/w/d/s.json": score_outputs(whole), "results/scores/l/d/s.json": score_outputs(limited)}
    w, lim = {"model": "w", "dataset": "d", "setting": "s"}, {"model": "l", "dataset": "d", "setting": "s"}
    check = evaluate_check({"left": w, "op": ">", "right": lim, "margin": 0}, scores)
    assert check["paired_items"] == 20
    assert check["measured"] == pytest.approx(50.0 - 25.0)  # the whole files would say 10 - 25 = -15
    assert check["holds"] and check["ci95"][0] <= check["measured"] <= check["ci95"][1]
    assert check["scores"] == pytest.approx({"w s accuracy": 10.0, "l s accuracy": 25.0})  # the files' own numbers


def test_tables_show_the_interval_and_whether_the_papers_number_lies_in_it():
    score = score_outputs(_rows([True] * 60 + [False] * 40))
    paper = pd.DataFrame(
        [{"table": "T", "model": "M", "dataset": "d", "setting": "s", "metric": "accuracy", "value": v, "note": ""}
         for v in (58.0,)]  # fmt: skip
    )
    cell = {"model": "m", "paper_model": "M", "dataset": "d", "paper_dataset": "d", "setting": "s", "paper_setting": "s"}
    row = build_table([{**cell, "score": score}], paper, "T").iloc[0]
    assert row["ci95_low"] < 58.0 < row["ci95_high"] and row["paper_in_ci"]
    far = build_table([{**cell, "score": score}], paper.assign(value=80.0), "T").iloc[0]
    assert not far["paper_in_ci"]
