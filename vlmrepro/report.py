"""The report's index page: one link per rendered notebook with a one-line summary of its table."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

TITLES = {"table1": "Table 1 — VLMs vs CLIP, open- and closed-world classification (and Figure 1)"}


def table_summary(frame: pd.DataFrame) -> str:
    computed = frame["ours"].notna().sum()
    compared = frame["delta"].notna()
    text = f"{computed} of {len(frame)} cells computed"
    if compared.any():
        text += f"; {compared.sum()} compared with the paper, mean |Δ| = {frame.loc[compared, 'delta'].abs().mean():.1f} points"
    return text


def index_html(pages: list[str], tables: list[str]) -> str:
    items = []
    for page, table in zip(pages, tables):
        name = Path(page).stem
        summary = table_summary(pd.read_csv(table))
        items.append(
            f'<li><a href="{html.escape(Path(page).name)}">{html.escape(TITLES.get(name, name))}</a>'
            f"<br><small>{html.escape(summary)}</small></li>"
        )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Reproduction report</title></head><body>\n"
        "<h1>Why are Visually-Grounded Language Models Bad at Image Classification? — reproduction</h1>\n"
        "<p>Our numbers beside the paper's (Zhang et al., NeurIPS 2024), with per-cell deltas.</p>\n"
        f"<ul>\n{chr(10).join(items)}\n</ul>\n</body></html>\n"
    )
