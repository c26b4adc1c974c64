"""The summary accounts for every number of the paper: table cells, and the text's numbers through their mapping."""

import pandas as pd
import pytest
import yaml

from conftest import REPO
from vlmrepro.paper import load_paper_results
from vlmrepro.report import KEY, coverage, label_order_from_padding, load_text_numbers, padding_effect
from vlmrepro.tables import COLUMNS, delta_unit


def _text_table_cells(config: dict) -> set[tuple]:
    """(model, dataset, setting, metric) in paper names of the config's "text" table."""
    cells = set()
    for table in config["tables"].values():
        if table["paper_table"] != "text":
            continue
        for group in table["groups"]:
            for model in group["models"]:
                name = config["models"].get(model, {}).get("paper_name") or config["finetunes"][model.rsplit("-", 1)[0]]["paper_name"]
                for dataset in group["datasets"]:
                    for column in group["columns"]:
                        paper_key = config["datasets"][dataset]["paper_key"]
                        cells.add((name, paper_key, column["paper"], column.get("paper_metric", "accuracy")))
    return cells


def test_every_number_of_the_papers_text_is_mapped_once():
    paper = load_paper_results()
    text = paper[paper.table == "text"]
    mapping = load_text_numbers()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    direct = _text_table_cells(config)
    tables = {tuple(r) for r in paper.loc[paper.table != "text", KEY].astype(str).itertuples(index=False)}
    unmapped = []
    for _, row in text.iterrows():
        key = tuple(str(row[k]) for k in ("section", "model", "dataset", "setting", "metric"))
        in_text_table = (row["model"], row["dataset"], row["setting"], row["metric"]) in direct
        if in_text_table == (key in mapping):  # exactly one of the two
            unmapped.append(key)
    assert not unmapped
    assert len(text) == 86
    for entry in mapping.values():  # every table cell an entry names is a cell of the paper
        refs = [entry["same_as"]] if "same_as" in entry else list(entry.get("cells", {}).values())
        for ref in refs:
            if ref["table"] != "text":
                key = (ref["table"], ref["model"], ref["dataset"], ref["setting"], ref.get("metric", "accuracy"))
                assert key in tables, key
        assert ("reason" in entry) or refs


def _table(rows: list[dict]) -> pd.DataFrame:
    base = {c: "" for c in COLUMNS}
    return pd.DataFrame([{**base, **r} for r in rows], columns=COLUMNS)


def _cell(table, model, dataset, setting, ours, metric="accuracy", **extra):
    return {"paper_table": table, "paper_model": model, "model": model.lower(), "paper_dataset": dataset,
            "dataset": dataset, "paper_setting": setting, "setting": setting, "metric": metric,
            "paper_metric": metric, "ours": ours, **extra}  # fmt: skip


def test_text_numbers_are_restated_cells_arithmetic_or_reasons(tmp_path):
    _table([
        _cell("Table 9", "LLaVA1.5-7B", "imagenet", "K=2", 90.0),
        _cell("Table 9", "CLIP-L", "imagenet", "K=2", 98.0, ci95_low=97.5, ci95_high=98.5),
        _cell("Table 7", "", "caltech101", "dataset statistics", 4331, metric="n_validation_images"),
    ]).to_csv(tmp_path / "t.csv", index=False)
    overview, cells = coverage(tmp_path)
    text = cells[cells.table == "text"].set_index(["section", "setting", "metric", "model", "dataset"])
    ratio = text.loc[("B.2", "K=2; error rate relative to CLIP-L", "error_rate_ratio", "LLaVA1.5-7B", "imagenet")]
    assert ratio["ours"] == pytest.approx(5.0) and ratio["source"] == "(100 - vlm) / (100 - clip)"
    assert ratio["unit"] == "ratio" and ratio["delta"] == pytest.approx(5.0 - 28.5)
    gap = text.loc[("3.1", "K=2; gap to CLIP-L", "absolute_gap_points", "LLaVA1.5-7B", "imagenet")]
    assert gap["ours"] == pytest.approx(8.0)
    restated = text.loc[("2.2", "test/eval split", "n_eval_images", "", "caltech101")]
    assert restated["ours"] == 4331 and restated["unit"] == "count" and restated["source"] == "restates Table 7"
    missing = text.loc[("3.1", "K=100; gap to CLIP-L", "absolute_gap_points", "LLaVA1.5-7B", "imagenet")]
    assert pd.isna(missing["ours"]) and missing["reason"].startswith("needs cells not computed in this run: Table 9")
    budget = text.loc[("B.5", "Q-Former fine-tune 10 epochs", "l40_gpu_hours", "BLIP2-2.7B", "imagenet")]
    assert "compute budget" in budget["reason"]
    assert not cells["reason"].str.contains("configured for it|tables\\.", regex=True).any()
    clip = cells[(cells.table == "Table 9") & (cells.model == "CLIP-L") & (cells.dataset == "imagenet") & (cells.setting == "K=2")]
    assert clip["paper_in_ci"].iloc[0] is False  # the paper's 99.8 lies above our [97.5, 98.5]
    lora = cells[(cells.table == "Table 3") & (cells.setting == "Fine-tuning: Proj+LM (LoRA)") & (cells.dataset == "imagenet")]
    assert lora["reason"].iloc[0].startswith("N/A in the paper: NaN; loss diverged")
    # Table 7's Δ are counts: never averaged into the mean |Δ| in points
    assert pd.isna(overview.set_index("table").loc["Table 7", "mean_abs_delta_points"])


def test_delta_units():
    assert [delta_unit(m) for m in ("accuracy", "n_classes", "spearman_r", "error_rate_ratio", "score")] == [
        "points", "count", "r", "ratio", "points"]  # fmt: skip


def test_padding_page_splits_the_label_order_gap():
    rows = []
    for setting, upstream, fast, paper in (("w/ Label (Random Order)", 20.0, 40.0, 22.3), ("w/ Label (Fixed Order)", 50.0, 45.0, 53.8)):
        rows.append({"paper_model": "BLIP2-2.7B", "dataset": "caltech101", "paper_setting": setting, "ours": upstream, "paper": paper})
        rows.append({"paper_model": "BLIP2-2.7B", "dataset": "caltech101", "paper_setting": setting + " · fast batching", "ours": fast, "paper": None})
    cells = padding_effect(pd.DataFrame(rows))
    assert sorted(cells["from_padding"]) == [-20.0, 5.0]
    gaps = label_order_from_padding(cells).iloc[0]
    assert gaps["gap_upstream"] == 30.0 and gaps["gap_fast"] == 5.0 and gaps["gap_paper"] == pytest.approx(31.5)
    assert gaps["share_from_padding"] == pytest.approx(25 / 30)
