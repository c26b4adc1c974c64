"""The paper's reported numbers (``data/paper_results.csv``, copied from the reference pack): every table cell in
long format: table, section, model, dataset, setting, metric, value, note. Empty values are N/A or NaN cells."""

from __future__ import annotations

from importlib import resources

import pandas as pd


def load_paper_results() -> pd.DataFrame:
    with resources.files("vlmrepro").joinpath("data/paper_results.csv").open(encoding="utf-8") as handle:
        frame = pd.read_csv(handle, dtype={"value": float}, keep_default_na=False, na_values={"value": [""]})
    # the reference file repeats a few identical rows; one copy of each is enough for look-ups
    return frame.drop_duplicates().reset_index(drop=True)


def paper_cell(frame: pd.DataFrame, table: str, model: str, dataset: str, setting: str, metric: str = "accuracy"):
    """(value or None, note) of one cell; (None, 'not in the paper') when the paper has no such cell."""
    hit = frame[
        (frame.table == table)
        & (frame.model == model)
        & (frame.dataset == dataset)
        & (frame.setting == setting)
        & (frame.metric == metric)
    ]
    if hit.empty:
        return None, "not in the paper"
    row = hit.iloc[0]
    value = None if pd.isna(row.value) else float(row.value)
    return value, row.note
