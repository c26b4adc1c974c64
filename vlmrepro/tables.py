"""Assemble reproduced numbers beside the paper's, cell by cell, with deltas."""

from __future__ import annotations

import pandas as pd

from .paper import paper_cell

COLUMNS = [
    "paper_table",
    "model",
    "paper_model",
    "dataset",
    "paper_dataset",
    "setting",
    "paper_setting",
    "metric",
    "paper_metric",
    "ours",
    "ours_strict",
    "ci95_low",
    "ci95_high",
    "paper",
    "delta",
    "paper_in_ci",
    "n_evaluated",
    "n_items",
    "note",
    "paper_note",
]


def delta_unit(metric: str) -> str:
    """What a value (and a Δ) of this metric counts: percentage points, correlation (r), a count of images or
    classes, or a ratio. Only points are averaged into a table's mean |Δ|."""
    if metric.startswith("n_"):
        return "count"
    if metric.endswith("_r"):
        return "r"
    if metric.endswith(("_ratio", "_factor")):
        return "ratio"
    return "points"


def round_metric(value, metric="accuracy"):
    """Accuracies to one decimal, correlations and ratios to two, as the paper prints them."""
    if value is None:
        return None
    return round(value, 2) if delta_unit(metric) in ("r", "ratio") else round(value, 1)


def metric_value(score: dict, metric: str):
    """A score's metric; a dotted path reads nested fields and list positions ("per_stage.pretrain.spearman_r",
    "bins.12.accuracy": Figure 3's bin of classes seen 10,000 to 100,000 times)."""
    value = score
    for part in metric.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def missing_note(score: dict, metric: str) -> str:
    """Why a score has no value for ``metric``: the N/A reason of the score or of the nested field's container."""
    parent = metric_value(score, metric.rsplit(".", 1)[0]) if "." in metric else None
    reason = (parent.get("na_reason") if isinstance(parent, dict) else None) or score.get("na_reason")
    if reason:
        return reason
    if isinstance(parent, dict) and parent.get("n") == 0:
        return "N/A: no class falls in this frequency bin"
    return f"N/A: the score has no {metric}" if score else ""


def partial_note(score: dict) -> str:
    """'computed on 4,321 of 4,331 items (10 skipped image)' for a cell some of whose items were not evaluated."""
    missing = {status: n for status, n in (score.get("not_evaluated") or {}).items() if n}
    if not missing:
        return ""
    parts = ", ".join(f"{n:,} {status.replace('_', ' ')}" for status, n in sorted(missing.items()))
    return f"computed on {score['n_evaluated']:,} of {score['n_items']:,} items ({parts})"


def value_remarks(score: dict) -> list[str]:
    """What a reader of a computed cell should know about how it was computed."""
    remarks = []
    if "n_random_fallback" in score:  # multiple-choice answers no letter was found in
        remarks.append(f"{score['n_random_fallback']} random fallback(s)")
    if score.get("n_empty_answers"):
        remarks.append(f"{score['n_empty_answers']:,} empty answer(s), scored wrong")
    if score.get("truncated_classes"):
        remarks.append(truncation_note(score["truncated_classes"]))
    return remarks


def truncation_note(truncated: list[dict]) -> str:
    """'2 class prompts cut at 77 tokens (scored cut, as upstream): "…", "…"' for a CLIP cell."""
    shown = ", ".join(repr(t["class"] if len(t["class"]) <= 40 else t["class"][:37] + "...") for t in truncated[:3])
    more = f" and {len(truncated) - 3} more" if len(truncated) > 3 else ""
    return (
        f"{len(truncated)} class prompt(s) cut at {truncated[0]['context']} tokens (scored cut, as upstream): "
        f"{shown}{more}"
    )


def build_table(
    cells: list[dict], paper: pd.DataFrame, paper_table: str, not_reproduced: list[dict] = ()
) -> pd.DataFrame:
    """``cells``: one dict per (model, dataset, setting, metric) with the paper's names and either a ``score``
    dict or a ``not_run`` reason. One row per cell, in the order given; then one row per paper cell deliberately
    not reproduced (``not_reproduced``: paper_model, paper_setting, reason)."""
    rows = []
    for cell in cells:
        score = cell.get("score") or {}
        metric = cell.get("metric", "accuracy")
        value, paper_note = paper_cell(
            paper,
            paper_table,
            cell["paper_model"],
            cell["paper_dataset"],
            cell["paper_setting"],
            cell.get("paper_metric", "accuracy"),
        )
        ours = round_metric(metric_value(score, metric), metric)
        ci = score.get(f"{metric}_ci95") if ours is not None else None
        note = cell.get("not_run") or (partial_note(score) if ours is not None else missing_note(score, metric))
        if ours is not None:
            note = "; ".join(filter(None, [note, *value_remarks(score)]))
        rows.append(
            {
                **{
                    k: cell[k] for k in ("model", "paper_model", "dataset", "paper_dataset", "setting", "paper_setting")
                },
                "paper_table": paper_table,
                "metric": metric,
                "paper_metric": cell.get("paper_metric", "accuracy"),
                "ours": ours,
                "ours_strict": round_metric(score.get(f"{metric}_word_boundary")),
                "paper": value,
                "delta": None if ours is None or value is None else round_metric(ours - value, metric),
                "ci95_low": round_metric(ci[0], metric) if ci else None,
                "ci95_high": round_metric(ci[1], metric) if ci else None,
                # is the paper's number inside our 95 % interval (Δ within what resampling the items explains)?
                "paper_in_ci": None if not ci or value is None else bool(ci[0] <= value <= ci[1]),
                "n_evaluated": score.get("n_evaluated"),
                "n_items": score.get("n_items"),
                "note": note,
                "paper_note": paper_note,
            }
        )
    for skipped in not_reproduced:
        hits = paper[
            (paper.table == paper_table)
            & (paper.model == skipped["paper_model"])
            & (paper.setting == skipped["paper_setting"])
        ]
        if hits.empty:
            raise ValueError(
                f"not_reproduced entry {skipped['paper_model']!r} / {skipped['paper_setting']!r} matches no "
                f"{paper_table} cell of the paper"
            )
        for _, hit in hits.iterrows():
            rows.append(
                {
                    "model": "",
                    "paper_model": hit.model,
                    "dataset": hit.dataset,
                    "paper_dataset": hit.dataset,
                    "setting": "",
                    "paper_setting": hit.setting,
                    "paper_table": paper_table,
                    "metric": hit.metric,
                    "paper_metric": hit.metric,
                    "paper": None if pd.isna(hit.value) else float(hit.value),
                    "note": f"not reproduced: {skipped['reason']}",
                    "paper_note": hit.note,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)
