"""Report helpers shared by the papermill notebooks, and the index page."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from .tables import delta_unit, round_metric

NUMERIC = ["ours", "ours_strict", "ci95_low", "ci95_high", "paper", "delta", "n_evaluated", "n_items"]


def load_table(path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in NUMERIC})
    frame["row"] = frame["paper_model"] + frame["model"].map(lambda m: f" [{m}]" if m else "")
    return frame


def _fmt(value) -> str:
    return "N/A" if pd.isna(value) else f"{value:.1f}"


def with_interval(row, value: str = "ours") -> str:
    """'74.8 [74.4, 75.2]': the number and its 95 % bootstrap interval over items, where it has one."""
    if pd.isna(row[value]) or value != "ours" or pd.isna(row.get("ci95_low")):
        return _fmt(row[value])
    return f"{row[value]:.1f} [{row['ci95_low']:.1f}, {row['ci95_high']:.1f}]"


def side_by_side(frame: pd.DataFrame, value: str = "ours") -> pd.DataFrame:
    """Rows: models; columns: (dataset, ours [95 % interval] | paper | Δ)."""
    out = {}
    for dataset in dict.fromkeys(frame["dataset"]):
        sub = frame[frame.dataset == dataset].set_index("row")
        out[(dataset, "ours")] = sub.apply(with_interval, axis=1, value=value) if len(sub) else sub[value]
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


FAST_BATCHING = " · fast batching"  # suffix of a padding-table column run with left padding and sorted batches


def padding_effect(frame: pd.DataFrame) -> pd.DataFrame:
    """The padding table's cells side by side: each (model, dataset, paper column) under upstream's batching (the
    checkpoint's padding side, batches in plan order) and under fast batching (left padding), and the difference."""
    fast = frame["paper_setting"].str.endswith(FAST_BATCHING)
    key = ["paper_model", "dataset", "paper_setting"]
    upstream = frame.loc[~fast, [*key, "ours", "paper"]]
    left = frame.loc[fast, [*key, "ours"]].assign(paper_setting=lambda f: f["paper_setting"].str.removesuffix(FAST_BATCHING))
    cells = upstream.merge(left, on=key, suffixes=("_upstream", "_fast"))
    return cells.assign(from_padding=cells["ours_upstream"] - cells["ours_fast"])


def label_order_from_padding(cells: pd.DataFrame, fixed: str = "w/ Label (Fixed Order)",
                             random: str = "w/ Label (Random Order)") -> pd.DataFrame:  # fmt: skip
    """Per model and dataset, the label-order gap (fixed minus random order) in the paper, under upstream batching
    and under fast batching, and the share of the upstream gap that disappears with left padding."""
    pivot = cells.pivot_table(
        index=["paper_model", "dataset"], columns="paper_setting", values=["paper", "ours_upstream", "ours_fast"], dropna=False
    )
    if fixed not in pivot.columns.get_level_values(1) or random not in pivot.columns.get_level_values(1):
        return pd.DataFrame(columns=["paper_model", "dataset", "gap_paper", "gap_upstream", "gap_fast", "share_from_padding"])
    gaps = pd.DataFrame({f"gap_{name}": pivot[(column, fixed)] - pivot[(column, random)]
                         for name, column in (("paper", "paper"), ("upstream", "ours_upstream"), ("fast", "ours_fast"))})  # fmt: skip
    upstream_gap = gaps["gap_upstream"].where(gaps["gap_upstream"] != 0)
    gaps["share_from_padding"] = (gaps["gap_upstream"] - gaps["gap_fast"]) / upstream_gap
    return gaps.reset_index()


def padding_sentences(gaps: pd.DataFrame) -> list[str]:
    """One sentence per model and dataset: how much of its label-order gap comes from padding."""
    out = []
    for _, g in gaps.iterrows():
        if pd.isna(g["gap_upstream"]) or pd.isna(g["gap_fast"]):
            out.append(f"{g['paper_model']}, {g['dataset']}: not computed yet.")
            continue
        paper = "" if pd.isna(g["gap_paper"]) else f"{g['gap_paper']:+.1f} points in the paper, "
        share = "" if pd.isna(g["share_from_padding"]) else (
            f": {g['share_from_padding']:.0%} of our upstream gap comes from padding and batch-mates"
        )
        out.append(
            f"{g['paper_model']}, {g['dataset']}: fixed minus random label order is {paper}"
            f"{g['gap_upstream']:+.1f} under upstream's batching and {g['gap_fast']:+.1f} with left padding{share}."
        )
    return out


TITLES = {
    "table1": "Table 1 — VLMs vs CLIP, open- and closed-world classification (and Figure 1)",
    "table2": "Table 2 — inference: prompt wording, label order, chain-of-thought, probabilistic inference",
    "table9": "Table 9 / Figures 2 and 4 — accuracy vs label-set size K",
    "table3": "Table 3 — probing the VLMs' features and CLIP linear heads (the information is there)",
    "table10": "Table 10 — probe accuracy by token position (LLaVA1.5-7B, Flowers102)",
    "table11": "Figure 3 / Table 11 — class frequency in the training data vs per-class accuracy",
    "table12": "Table 12 — GPT-4 vs LLaVA: prompt variations (base, fixed / random label order, chain-of-thought)",
    "robustness": "Robustness — identical results at batch size 1 and after a resume (% of items)",
    "padding": "Padding — the right-padded models under upstream's batches and with left padding",
    "table7": "Table 7 — dataset statistics (images per split, classes)",
    "table4": "Table 4 — fine-tuning on captions vs classification data",
    "table5": "Table 5 — ImageWikiQA: knowledge questions that need the object recognised",
    "table8": "Table 8 — ImageNet open-world accuracy with synonyms",
    "section4": "The paper's text — numbers in no table (§4.3 instruction mix on ImageNet, Figure 3 bins, B.6)",
    "table13": "Table 13 — general benchmarks after the ImageNet + LLaVA instruction mix (TextVQA, POPE, MM-Vet)",
}


def _evaluate(expression: str, names: dict[str, float]) -> float:
    """Arithmetic of the text-number formulas (+ − × ÷, min, max) on named cell values; nothing else is allowed."""
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
    functions = {"min": min, "max": max}

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
            return functions[node.func.id](*(walk(a) for a in node.args))
        raise ValueError(f"text-number formula {expression!r}: unsupported {ast.dump(node)[:60]}")

    return float(walk(ast.parse(expression, mode="eval")))


def load_text_numbers() -> dict[tuple, dict]:
    """data/text_numbers.yaml keyed by (section, model, dataset, setting, metric) of the paper's text rows."""
    from importlib import resources

    import yaml

    entries = yaml.safe_load(resources.files("vlmrepro").joinpath("data/text_numbers.yaml").read_text(encoding="utf-8"))
    return {tuple(str(e[k]) for k in ("section", "model", "dataset", "setting", "metric")): e for e in entries}


KEY = ["table", "model", "dataset", "setting", "metric"]


def _resolve_text(entry: dict | None, ours: pd.DataFrame) -> dict:
    """Our number (and interval, reason) for one text row, from the cells its entry names."""
    if entry is None:
        return {"reason": "no mapping to our cells (data/text_numbers.yaml)"}

    def cell(ref: dict):
        key = (ref["table"], ref["model"], ref["dataset"], ref["setting"], ref.get("metric", "accuracy"))
        return ours.loc[key] if key in ours.index else None

    if "same_as" in entry:
        ref = entry["same_as"]
        hit = cell(ref)
        if hit is None:
            return {"reason": entry.get("reason") or f"restates {ref['table']} ({ref['model']}, {ref['dataset']}, "
                                                      f"{ref['setting']}), not in this run's tables"}  # fmt: skip
        restated = f"restates {ref['table']}"
        return {"ours": hit["ours"], "ci95_low": hit["ci95_low"], "ci95_high": hit["ci95_high"],
                "reason": hit["our_note"] or ("" if pd.notna(hit["ours"]) else "not computed yet"), "source": restated}  # fmt: skip
    if "formula" in entry:
        values, missing = {}, []
        for name, ref in entry["cells"].items():
            hit = cell(ref)
            value = None if hit is None else hit[ref.get("field", "ours")]
            if value is None or pd.isna(value):
                missing.append(f"{ref['table']} {ref['model']} {ref['dataset']} {ref['setting']}")
            else:
                values[name] = float(value)
        if missing:
            return {"reason": "needs cells not computed in this run: " + "; ".join(missing), "source": entry["formula"]}
        try:
            return {"ours": _evaluate(entry["formula"], values), "reason": "", "source": entry["formula"]}
        except ZeroDivisionError:
            return {"reason": f"{entry['formula']} divides by zero on our numbers", "source": entry["formula"]}
    return {"reason": entry["reason"]}


def coverage(tables_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per table of the paper and one for its text: its numbers, how many are configured, computed and
    compared, mean |Δ| in points; one row per number of the paper with ours beside it, our 95 % interval, Δ, whether
    the paper's number lies in our interval, and for the ones not computed the reason).

    A table cell is ours when a table of the run has it; a number of the text is a cell of the run's "text" table,
    the table cell it restates, arithmetic on cells, or a stated reason (data/text_numbers.yaml)."""
    from .paper import load_paper_results

    paper = load_paper_results()
    frames = [load_table(p) for p in sorted(Path(tables_dir).glob("*.csv"))]
    columns = {f"paper_{k}": k for k in KEY}
    kept = ["ours", "ci95_low", "ci95_high", "paper_in_ci", "n_evaluated", "n_items", "note"]
    ours = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*columns, *kept])
    ours = ours[[*columns, *kept]].rename(columns={**columns, "note": "our_note"})
    ours = ours.sort_values("ours", na_position="last", kind="stable").drop_duplicates(subset=KEY)  # computed first
    merged = paper.merge(ours, on=KEY, how="left", indicator=True)
    merged["source"] = ""
    merged["reason"] = merged["our_note"].fillna("")
    computed_here = merged["_merge"] == "both"
    merged.loc[computed_here & merged["ours"].isna() & (merged["reason"] == ""), "reason"] = "not computed yet"
    indexed = ours.set_index(KEY)
    text_numbers = load_text_numbers()
    for i in merged.index[(merged["table"] == "text") & ~computed_here]:
        row = merged.loc[i]
        key = tuple(str(row[k]) for k in ("section", "model", "dataset", "setting", "metric"))
        for field, value in _resolve_text(text_numbers.get(key), indexed).items():
            merged.at[i, field] = value
    unconfigured = (merged["table"] != "text") & ~computed_here
    merged.loc[unconfigured, "reason"] = [
        f"N/A in the paper: {note}" if pd.isna(value) else "not in this run's configuration"
        for value, note in zip(merged.loc[unconfigured, "value"], merged.loc[unconfigured, "note"])
    ]
    merged["ours"] = pd.to_numeric(merged["ours"], errors="coerce")
    merged["ours"] = [v if pd.isna(v) else round_metric(v, m) for v, m in zip(merged["ours"], merged["metric"])]
    merged["delta"] = [None if pd.isna(o) or pd.isna(p) else round_metric(o - p, m)
                       for o, p, m in zip(merged["ours"], merged["value"], merged["metric"])]  # fmt: skip
    merged["unit"] = merged["metric"].map(delta_unit)
    merged["paper_in_ci"] = [
        None if pd.isna(lo) or pd.isna(p) else bool(lo <= p <= hi)
        for lo, hi, p in zip(pd.to_numeric(merged["ci95_low"]), pd.to_numeric(merged["ci95_high"]), merged["value"])
    ]
    merged["configured"] = computed_here | merged["source"].astype(bool)
    points = merged.assign(delta=merged["delta"].where(merged["unit"] == "points"))
    overview = points.groupby("table", sort=False).agg(
        paper_numbers=("value", "size"),
        configured=("configured", "sum"),
        computed=("ours", lambda v: int(v.notna().sum())),
        compared=("ours", lambda v: int((v.notna() & merged.loc[v.index, "value"].notna()).sum())),
        mean_abs_delta_points=("delta", lambda v: round(float(v.abs().mean()), 1) if v.notna().any() else None),
        paper_within_our_ci=("paper_in_ci", lambda v: int((v == True).sum())),  # noqa: E712 (object column)
    )
    merged["reason"] = merged["reason"].where(merged["ours"].isna(), "")
    cells = merged[["table", "section", "model", "dataset", "setting", "metric", "value", "ours", "ci95_low",
                    "ci95_high", "delta", "unit", "paper_in_ci", "source", "reason"]]  # fmt: skip
    return overview.reset_index(), cells.rename(columns={"value": "paper"}).reset_index(drop=True)


def table_summary(frame: pd.DataFrame) -> str:
    """'12 of 16 cells computed; 12 compared with the paper, mean |Δ| = 3.1 points' (counts and correlations are
    not points: Table 7's Δ are image and class counts, Table 11's are differences of r)."""
    computed = frame["ours"].notna().sum()
    compared = frame["delta"].notna()
    text = f"{computed} of {len(frame)} cells computed"
    if compared.any():
        units = frame["paper_metric"].map(delta_unit)
        text += f"; {compared.sum()} compared with the paper"
        for unit, label in (("points", "mean |Δ| = {:.1f} points"), ("r", "mean |Δr| = {:.2f}")):
            chosen = compared & (units == unit)
            if chosen.any():
                text += ", " + label.format(frame.loc[chosen, "delta"].abs().mean())
        if (compared & (units == "count")).any():
            text += ", Δ of counts per cell (not averaged)"
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
