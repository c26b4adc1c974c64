"""Which tables a run plans and the cells each lists: (model, dataset, setting) with the paper's names, and for a
cell that is not run, why (an exclusion of the config, or an API model without its key). Light: the Snakefile
imports it to plan."""

from __future__ import annotations

from .api import missing_key
from .registry import finetuned_models


def planned_tables(config: dict) -> dict:
    """The config's tables; those marked on_request (current models beyond the paper) only when requested."""
    return {k: t for k, t in config["tables"].items() if not t["on_request"] or k in config["requested_tables"]}


def api_model_of(config: dict, model: str) -> str | None:
    """The API model a cell depends on (itself, or the one that wrote a caption fine-tune's captions), or None."""
    if config["models"][model]["family"] == "api":
        return model
    recipe = config["finetunes"].get(finetuned_models(config).get(model, {}).get("recipe"), {})
    return api_model_of(config, recipe["captions"]["model"]) if "captions" in recipe else None


def api_not_run(config: dict, model: str) -> str | None:
    """Why a cell that needs an API model is not run, or None when it runs. api.enabled auto runs a provider's
    cells when its key variable is set, so a run without keys finishes everything else."""
    api_model, enabled = api_model_of(config, model), config["api"]["enabled"]
    if api_model is None or enabled is True:
        return None
    if enabled is False:
        return "not run: proprietary API models are switched off for this run (api.enabled: false)"
    entry = config["models"][api_model]
    variable = missing_key(entry["api"]["provider"])
    return f"not run: {variable} is not set (the key of {entry['paper_name']})" if variable else None


def exclusion_reason(rules: list[dict], cell: dict) -> str | None:
    """The reason of the first exclusion rule matching the cell, or None."""
    for exclusion in rules:
        if all(cell[k] == v for k, v in exclusion.items() if k != "reason"):
            return exclusion["reason"]
    return None


def table_cells(config: dict, spec: dict) -> list[dict]:
    """Every (model, dataset, setting) cell of a table with its paper names; excluded cells carry the reason."""
    cells = []
    for group in spec["groups"]:
        for model in group["models"]:
            for dataset in group["datasets"]:
                # a fine-tuning recipe stands for its model trained on the cell's dataset
                key = f"{model}-{dataset}" if model in config["finetunes"] else model
                for column in group["columns"]:
                    cell = {
                        "model": key,
                        "paper_model": config["models"][key]["paper_name"],
                        "dataset": dataset,
                        "paper_dataset": config["datasets"][dataset]["paper_key"],
                        "setting": column["setting"],
                        "paper_setting": column["paper"],
                        "metric": column["metric"],
                        "paper_metric": column["paper_metric"],
                    }
                    excluded = exclusion_reason(spec["exclude"], cell)
                    not_run = f"not run: {excluded}" if excluded else api_not_run(config, key)
                    if not_run:
                        cell["not_run"] = not_run
                    cells.append(cell)
    return cells
