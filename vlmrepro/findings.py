"""Findings: the paper's claims as checks over our scores (``report.findings``), with the margin each must hold by.

A check compares two scores, or a score and a number (``left - right >= margin`` for ``>``, ``right - left >=
margin`` for ``<``; ``abs: true`` compares the absolute value of ``left``), or asks what share of the gap between
two scores a third closes (``gap_closed``). A score is ``{model, dataset, setting, metric}`` (metric: accuracy by
default) and is read from its score file (``registry.SCORE_FILE``).
"""

from __future__ import annotations

from .intervals import difference_interval, per_item, share_interval
from .registry import score_file


def score_path(ref: dict) -> str:
    return score_file(ref["model"], ref["dataset"], ref["setting"])


def check_refs(check: dict) -> list[dict]:
    """The scores a check reads (numbers compared against are not scores)."""
    refs = [check[k] for k in ("left", "right") if isinstance(check.get(k), dict)]
    return refs + list(check.get("gap_closed", {}).values())


def score_refs(findings: list[dict]) -> list[str]:
    """Every score file the findings read (the rule's inputs)."""
    return sorted({score_path(ref) for finding in findings for check in finding["checks"] for ref in check_refs(check)})


def _value(ref, scores: dict) -> float:
    if not isinstance(ref, dict):
        return float(ref)
    value = scores[score_path(ref)].get(ref.get("metric", "accuracy"))
    if value is None:
        raise KeyError(f"{score_path(ref)} has no metric {ref.get('metric', 'accuracy')!r}")
    return float(value)


def _name(ref) -> str:
    if not isinstance(ref, dict):
        return f"{ref:g}"
    return f"{ref['model']} {ref['setting']} {ref.get('metric', 'accuracy')}"


def _outcomes(ref, scores: dict):
    """{row: 0/1} of a score reference's metric, or None (a number, or a metric without per-item outcomes)."""
    if not isinstance(ref, dict):
        return None
    return per_item(scores[score_path(ref)], ref.get("metric", "accuracy"))


def _interval(check: dict, scores: dict) -> dict:
    """95 % bootstrap interval of the measured quantity (docs/protocol.md#confidence-intervals): paired over the
    items both scores evaluated; a score against a number shifts that score's own interval; none for correlations
    and absolute values."""
    if "gap_closed" in check:
        outcomes = [_outcomes(check["gap_closed"][k], scores) for k in ("start", "end", "value")]
        return share_interval(*outcomes) if None not in outcomes else {"ci95": None}
    if check.get("abs"):
        return {"ci95": None}
    left, right = _outcomes(check["left"], scores), _outcomes(check["right"], scores)
    if left is not None and right is not None:
        result = difference_interval(left, right)
        if check["op"] == "<" and result["ci95"]:
            result["ci95"] = [-result["ci95"][1], -result["ci95"][0]]
        return result
    scored, number, sign = (check["left"], check["right"], 1) if left is not None else (check["right"], check["left"], -1)
    ci = scores[score_path(scored)].get(f"{scored.get('metric', 'accuracy')}_ci95") if isinstance(scored, dict) else None
    if not ci or isinstance(number, dict):
        return {"ci95": None}
    low, high = ci[0] - float(number), ci[1] - float(number)  # left - number
    if (sign > 0) != (check["op"] == ">"):
        low, high = -high, -low
    return {"ci95": [low, high]}


def _paired_values(refs: list, scores: dict) -> tuple[list[float], int | None]:
    """The scores of a check, each as its accuracy over the items every score of it evaluated (the rows its
    interval resamples), with their count; each whole file's value where any lacks per-item outcomes or they share
    no item (a number stays a number)."""
    outcomes = [_outcomes(ref, scores) for ref in refs]
    scored = [o for o in outcomes if o is not None]
    common = sorted(set.intersection(*(set(o) for o in scored))) if scored else []
    if len(scored) < 2 or not common or len(scored) < sum(isinstance(ref, dict) for ref in refs):
        return [_value(ref, scores) for ref in refs], None
    values = [
        _value(ref, scores) if o is None else 100 * sum(o[r] for r in common) / len(common)
        for ref, o in zip(refs, outcomes)
    ]
    return values, len(common)


def evaluate_check(check: dict, scores: dict) -> dict:
    """The check in words, our numbers, whether it holds, ``measured`` against ``required`` (the quantity the check
    compares, a difference of scores or the share of a gap, and the least it may be), the quantity's 95 %
    ``ci95``, whether the whole interval clears the requirement (``holds_across_ci``) and the ``scores`` read.
    Where both sides keep per-item outcomes, ``measured`` and ``ci95`` are computed on the same rows: those both
    evaluated (``paired_items``; probabilistic inference scores 1,000 items, open world every one)."""
    read = {_name(ref): _value(ref, scores) for ref in check_refs(check)}
    interval = _interval(check, scores)
    if "gap_closed" in check:
        gap = check["gap_closed"]
        (start, end, value), _ = _paired_values([gap[k] for k in ("start", "end", "value")], scores)
        share = (value - start) / (end - start) if end != start else float("nan")
        result = {
            "check": f"{_name(gap['value'])} closes >= {check['at_least']:.0%} of the gap from "
                     f"{_name(gap['start'])} to {_name(gap['end'])}",  # fmt: skip
            "ours": f"{value:.1f} closes {share:.0%} of {start:.1f} -> {end:.1f}",
            "holds": share >= check["at_least"],
            "measured": share,
            "required": check["at_least"],
        }
    else:
        (left, right), _ = (
            ([_value(check["left"], scores), _value(check["right"], scores)], None)
            if check.get("abs")  # a correlation: no per-item outcomes to pair
            else _paired_values([check["left"], check["right"]], scores)
        )
        if check.get("abs"):
            left = abs(left)
        margin = check.get("margin", 0)
        difference = left - right if check["op"] == ">" else right - left
        shown = f"|{_name(check['left'])}|" if check.get("abs") else _name(check["left"])
        result = {
            "check": f"{shown} {check['op']} {_name(check['right'])} by >= {margin:g}",
            "ours": f"{left:.2f} vs {right:.2f}",
            "holds": difference >= margin,
            "measured": difference,
            "required": margin,
        }
    ci = interval["ci95"]
    result.update(
        ci95=ci,
        paired_items=interval.get("paired_items"),
        holds_across_ci=None if ci is None else bool(ci[0] >= result["required"]),
        scores=read,
    )
    return result


def evaluate_findings(findings: list[dict], scores: dict) -> list[dict]:
    """One entry per finding: its claim, the paper's numbers, each check with our numbers, and whether all hold."""
    out = []
    for finding in findings:
        checks = [evaluate_check(c, scores) for c in finding["checks"]]
        out.append({
            "finding": finding["name"],
            "claim": finding["claim"],
            "paper": finding["paper"],
            "checks": checks,
            "holds": all(c["holds"] for c in checks),
        })  # fmt: skip
    return out
