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
    "paper",
    "delta",
    "n_evaluated",
    "n_items",
    "note",
    "paper_note",
]


def _round(value, metric="accuracy"):
    """Accuracies to one decimal and correlations to two, as the paper prints them."""
    if value is None:
        return None
    return round(value, 2) if metric.endswith("_r") else round(value, 1)


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
        ours = _round(score.get(metric), metric)
        note = cell.get("not_run") or score.get("na_reason") or ""
        skipped = score.get("not_evaluated", {}).get("skipped_image")
        if ours is not None and skipped:
            note = f"{skipped} image(s) skipped"
        if ours is not None and "n_random_fallback" in score:  # multiple-choice answers no letter was found in
            note = "; ".join(filter(None, [note, f"{score['n_random_fallback']} random fallback(s)"]))
        rows.append(
            {
                **{
                    k: cell[k] for k in ("model", "paper_model", "dataset", "paper_dataset", "setting", "paper_setting")
                },
                "paper_table": paper_table,
                "metric": metric,
                "paper_metric": cell.get("paper_metric", "accuracy"),
                "ours": ours,
                "ours_strict": _round(score.get(f"{metric}_word_boundary")),
                "paper": value,
                "delta": None if ours is None or value is None else _round(ours - value, metric),
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
