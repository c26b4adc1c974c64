"""Report helpers shared by the papermill notebooks, and the index page."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

NUMERIC = ["ours", "ours_strict", "paper", "delta", "n_evaluated", "n_items"]


def load_table(path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in NUMERIC})
    frame["row"] = frame["paper_model"] + frame["model"].map(lambda m: f" [{m}]" if m else "")
    return frame


def _fmt(value) -> str:
    return "N/A" if pd.isna(value) else f"{value:.1f}"


def side_by_side(frame: pd.DataFrame, value: str = "ours") -> pd.DataFrame:
    """Rows: models; columns: (dataset, ours | paper | Δ)."""
    out = {}
    for dataset in dict.fromkeys(frame["dataset"]):
        sub = frame[frame.dataset == dataset].set_index("row")
        out[(dataset, "ours")] = sub[value].map(_fmt)
        out[(dataset, "paper")] = sub["paper"].map(_fmt)
        out[(dataset, "Δ")] = sub["delta"].map(lambda d: "" if pd.isna(d) else f"{d:+.1f}")
    result = pd.DataFrame(out)
    return result.reindex([r for r in dict.fromkeys(frame["row"]) if r in result.index])


def by_setting(frame: pd.DataFrame):
    """(paper setting label, side-by-side table) in table order; one block per metric where a table has several."""
    several = frame["metric"].nunique() > 1
    for setting, metric in dict.fromkeys(zip(frame["paper_setting"], frame["metric"])):
        block = frame[(frame.paper_setting == setting) & (frame.metric == metric)]
        yield (f"{setting} · {metric}" if several else setting), side_by_side(block)


def not_computed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["note"] != "") | frame["ours"].isna()][
        ["row", "dataset", "setting", "ours", "note", "paper_note"]
    ]


def ours_vs_paper_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Long format (one row per cell and source) for bar charts; cells without a number are dropped."""
    long = pd.concat(
        [frame.assign(source="ours", accuracy=frame["ours"]), frame.assign(source="paper", accuracy=frame["paper"])],
        ignore_index=True,
    )
    return long.dropna(subset=["accuracy"])


TITLES = {
    "table1": "Table 1 — VLMs vs CLIP, open- and closed-world classification (and Figure 1)",
    "table2": "Table 2 — inference: prompt wording, label order, chain-of-thought, probabilistic inference",
    "table9": "Table 9 / Figures 2 and 4 — accuracy vs label-set size K",
    "table3": "Table 3 — probing the VLMs' features and CLIP linear heads (the information is there)",
    "table10": "Table 10 — probe accuracy by token position (LLaVA1.5-7B, Flowers102)",
    "table11": "Figure 3 / Table 11 — class frequency in the training data vs per-class accuracy",
    "table12": "Table 12 — GPT-4 vs LLaVA: prompt variations (base, fixed / random label order, chain-of-thought)",
    "robustness": "Robustness — identical results at batch size 1 and after a resume (% of items)",
    "table7": "Table 7 — dataset statistics (images per split, classes)",
    "table4": "Table 4 — fine-tuning on captions vs classification data",
    "table5": "Table 5 — ImageWikiQA: knowledge questions that need the object recognised",
    "table8": "Table 8 — ImageNet open-world accuracy with synonyms",
    "section4": "Paper §4.3 — ImageNet accuracy after the ImageNet + LLaVA instruction mix (in no table of the paper)",
    "table13": "Table 13 — general benchmarks after the ImageNet + LLaVA instruction mix (TextVQA, POPE, MM-Vet)",
}


def coverage(tables_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per paper table: its numbers, how many are configured, computed and compared, mean |Δ|;
    one row per number of the paper with ours beside it, Δ, and for the ones not computed the reason)."""
    from .paper import load_paper_results

    paper = load_paper_results()
    paper = paper[paper.table.str.startswith("Table ")]
    frames = [load_table(p) for p in sorted(Path(tables_dir).glob("*.csv"))]
    columns = {f"paper_{k}": k for k in ("table", "model", "dataset", "setting", "metric")}
    ours = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*columns, "ours", "delta", "note"])
    key = list(columns.values())
    ours = ours[[*columns, "ours", "delta", "note"]].rename(columns={**columns, "note": "our_note"})
    ours = ours.sort_values("ours", na_position="last", kind="stable").drop_duplicates(subset=key)  # computed first
    merged = paper.merge(ours, on=key, how="left", indicator=True)
    merged["reason"] = merged["our_note"].where(merged["_merge"] == "both", "no cell of ours is configured for it")
    merged.loc[(merged["_merge"] == "both") & merged["ours"].isna() & (merged["reason"] == ""), "reason"] = (
        "not computed yet"
    )
    overview = merged.groupby("table", sort=False).agg(
        paper_numbers=("value", "size"),
        configured=("_merge", lambda m: int((m == "both").sum())),
        computed=("ours", lambda v: int(v.notna().sum())),
        compared=("delta", lambda v: int(v.notna().sum())),
        mean_abs_delta=("delta", lambda v: round(float(v.abs().mean()), 1) if v.notna().any() else None),
    )
    merged["reason"] = merged["reason"].where(merged["ours"].isna(), "")
    cells = merged[["table", "model", "dataset", "setting", "metric", "value", "ours", "delta", "reason"]]
    return overview.reset_index(), cells.rename(columns={"value": "paper"}).reset_index(drop=True)


def table_summary(frame: pd.DataFrame) -> str:
    computed = frame["ours"].notna().sum()
    compared = frame["delta"].notna()
    text = f"{computed} of {len(frame)} cells computed"
    if compared.any():
        text += f"; {compared.sum()} compared with the paper, mean |Δ| = {frame.loc[compared, 'delta'].abs().mean():.1f} points"
    return text


def index_html(pages: list[str], tables: list[str], summary_page: str | None = None) -> str:
    items = []
    if summary_page:
        items.append(
            f'<li><a href="{html.escape(Path(summary_page).name)}">Summary: every paper table, and the numbers not '
            "computed with the reason</a></li>"
        )
    for page, table in zip(pages, tables):
        name = Path(page).stem
        summary = table_summary(load_table(table))
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
