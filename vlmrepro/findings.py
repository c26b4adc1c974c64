"""Findings: the paper's claims as checks over our scores (``report.findings``), with the margin each must hold by.

A check compares two scores, or a score and a number (``left - right >= margin`` for ``>``, ``right - left >=
margin`` for ``<``; ``abs: true`` compares the absolute value of ``left``), or asks what share of the gap between
two scores a third closes (``gap_closed``). A score is ``{model, dataset, setting, metric}`` (metric: accuracy by
default) and is read from ``results/scores/<model>/<dataset>/<setting>.json``.
"""

from __future__ import annotations

from .io import read_json


def score_path(ref: dict) -> str:
    return f"results/scores/{ref['model']}/{ref['dataset']}/{ref['setting']}.json"


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


def evaluate_check(check: dict, scores: dict) -> dict:
    """The check in words, our numbers, whether it holds, ``measured`` against ``required`` (the quantity the check
    compares, a difference of scores or the share of a gap, and the least it may be) and the ``scores`` it read."""
    read = {_name(ref): _value(ref, scores) for ref in check_refs(check)}
    if "gap_closed" in check:
        gap = check["gap_closed"]
        start, end, value = (_value(gap[k], scores) for k in ("start", "end", "value"))
        share = (value - start) / (end - start) if end != start else float("nan")
        return {
            "check": f"{_name(gap['value'])} closes >= {check['at_least']:.0%} of the gap from "
                     f"{_name(gap['start'])} to {_name(gap['end'])}",  # fmt: skip
            "ours": f"{value:.1f} closes {share:.0%} of {start:.1f} -> {end:.1f}",
            "holds": share >= check["at_least"],
            "measured": share,
            "required": check["at_least"],
            "scores": read,
        }
    left, right = _value(check["left"], scores), _value(check["right"], scores)
    if check.get("abs"):
        left = abs(left)
    margin = check.get("margin", 0)
    difference = left - right if check["op"] == ">" else right - left
    shown = f"|{_name(check['left'])}|" if check.get("abs") else _name(check["left"])
    return {
        "check": f"{shown} {check['op']} {_name(check['right'])} by >= {margin:g}",
        "ours": f"{left:.2f} vs {right:.2f}",
        "holds": difference >= margin,
        "measured": difference,
        "required": margin,
        "scores": read,
    }


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
