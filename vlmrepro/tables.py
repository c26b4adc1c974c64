"""Assemble reproduced numbers beside the paper's, cell by cell, with deltas."""

from __future__ import annotations

import pandas as pd

from .paper import paper_cell

TABLE1_COLUMNS = [
    "model", "paper_model", "dataset", "paper_dataset", "setting", "paper_setting", "ours", "ours_word_boundary",
    "paper", "delta", "n_evaluated", "n_items", "note", "paper_note",
]


def table1(cells: list[dict], paper: pd.DataFrame) -> pd.DataFrame:
    """``cells``: one dict per (model, dataset, setting) with the names and either a score dict or a reason it
    was not run. Returns one row per cell in the order given."""
    rows = []
    for cell in cells:
        score = cell.get("score") or {}
        value, paper_note = paper_cell(paper, "Table 1", cell["paper_model"], cell["paper_dataset"], cell["paper_setting"])
        ours = score.get("substring")
        note = cell.get("not_run") or score.get("na_reason") or ""
        skipped = score.get("not_evaluated", {}).get("skipped_image")
        if ours is not None and skipped:
            note = f"{skipped} image(s) skipped"
        rows.append(
            {
                "model": cell["model"],
                "paper_model": cell["paper_model"],
                "dataset": cell["dataset"],
                "paper_dataset": cell["paper_dataset"],
                "setting": cell["setting"],
                "paper_setting": cell["paper_setting"],
                "ours": None if ours is None else round(ours, 1),
                "ours_word_boundary": None if score.get("word_boundary") is None else round(score["word_boundary"], 1),
                "paper": value,
                "delta": None if ours is None or value is None else round(round(ours, 1) - value, 1),
                "n_evaluated": score.get("n_evaluated"),
                "n_items": score.get("n_items"),
                "note": note,
                "paper_note": paper_note,
            }
        )
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)
