"""Scoring rules for zero-shot classification outputs (PROTOCOL §6.1).

``substring`` is the paper's rule, quirks included: ``label.lower() in pred.lower()`` with no word boundaries, so
'ant' counts inside 'elephant'. ``word_boundary`` is a stricter extra column: the label must appear as whole words.
"""

from __future__ import annotations

import re

PROTOCOL_VERSION = 1


def substring_correct(label: str, pred: str) -> bool:
    return label.lower() in pred.lower()


def word_boundary_correct(label: str, pred: str) -> bool:
    pattern = r"(?<!\w)" + re.escape(label.lower()) + r"(?!\w)"
    return re.search(pattern, pred.lower()) is not None


def upstream_pred(pred: str, resplit_marker: str | None) -> str:
    """The scoring notebook re-splits Mistral predictions once more on the first '[/INST]' still present."""
    if resplit_marker and resplit_marker in pred:
        return pred.split(resplit_marker)[1]
    return pred


def score_outputs(rows: list[dict], resplit_marker: str | None = None) -> dict:
    """Accuracy in percent over the evaluated rows; rows that could not be evaluated are counted by reason.

    Upstream divides by ``N + 1e-9``; the same expression is used so that values agree to the last digit.
    """
    evaluated = [r for r in rows if r.get("status") == "ok"]
    not_evaluated: dict[str, int] = {}
    for r in rows:
        if r.get("status") != "ok":
            key = r.get("status", "unknown")
            not_evaluated[key] = not_evaluated.get(key, 0) + 1
    n = len(evaluated)
    result = {"n_items": len(rows), "n_evaluated": n, "not_evaluated": not_evaluated}
    if n == 0:
        status, count = max(not_evaluated.items(), key=lambda kv: kv[1])
        example = next(r.get("reason", "") for r in rows if r.get("status") == status)
        result.update(
            accuracy=None,
            accuracy_word_boundary=None,
            na_reason=f"N/A: {status} for {count} of {len(rows)} items (first: {example})",
        )
        return result
    preds = [(r["label"], upstream_pred(r["pred"], resplit_marker)) for r in evaluated]
    result["accuracy"] = 100 * sum(substring_correct(l, p) for l, p in preds) / (n + 1e-9)
    result["accuracy_word_boundary"] = 100 * sum(word_boundary_correct(l, p) for l, p in preds) / (n + 1e-9)
    return result
