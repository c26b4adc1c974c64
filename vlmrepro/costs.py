"""The cost model of a run: the GPU seconds of each planned job, from the config's item counts
(``datasets.<name>.sizes``) and its per-model throughput table (``estimate.throughput``: items per second on the
reference GPU). Used to price a run (``vlmrepro.estimate``) and to size a cluster job's time limit
(``runtime: auto``, ``vlmrepro.cluster``).

Generation time grows with the generated length: the table's ``generate`` rate is for ``reference_new_tokens``
tokens and is scaled by a setting's typical answer length above that (``estimate.answer_tokens``, at most its
``max_new_tokens``): greedy answers stop at the end-of-sequence token, far below the cap (a fine-tuned model's class
name is a few tokens of a 1,024-token cap).
"""

from __future__ import annotations

from vlmrepro.registry import base_model, finetuned_models

GPU_RULES = {
    "generate": "generate",
    "clip_zero_shot": "clip",
    "loglik": "loglik",
    "extract_features": "features",
    "finetune": "finetune",
    "lmms_eval": "benchmark",
}


def _split_size(config: dict, dataset: str, split: str) -> int:
    spec = config["datasets"][dataset]
    sizes = spec["sizes"]
    if split == "all":
        return sum(sizes.values())
    split = spec["eval_split"] if split == "eval" else split
    if split not in sizes:
        raise KeyError(f"datasets.{dataset}.sizes has no {split!r} count: add it to price this run")
    return sizes[split]


def answer_tokens(config: dict, name: str, setting: dict) -> int:
    """Tokens a setting's answers typically take, capped by its ``max_new_tokens``."""
    typical = config["estimate"]["answer_tokens"]
    return min(typical.get(name, typical["default"]), setting.get("max_new_tokens", 64))


def job_cost(config: dict, rule: str, wc: dict[str, str]) -> tuple[int, float]:
    """(items, GPU seconds) of one job."""
    table = config["estimate"]["throughput"]
    model = wc.get("model", "")
    if rule == "finetune":
        entry = finetuned_models(config)[model]
        recipe, dataset = config["finetunes"][entry["recipe"]], entry["dataset"]
        items = _split_size(config, dataset, "train") * recipe.get("epochs_by_dataset", {}).get(dataset, recipe.get("epochs", 50))
        if "mix" in recipe:
            items += config["estimate"]["instruction_mix_records"] * recipe.get("epochs", 1)
        base = recipe["base"]
        rate = {**table["default"], **table.get(base, {})}["finetune"]
        return items, items / rate * recipe.get("gpus", 1)
    kind = GPU_RULES[rule]
    rate = {**table["default"], **table.get(base_model(config, model), {})}[kind]
    dataset, setting = wc["dataset"], config["settings"].get(wc.get("setting", ""), {})
    if rule == "lmms_eval":
        items = config["datasets"][dataset]["sizes"]["test"]
        return items, items / rate
    items = _split_size(config, dataset, setting.get("split", "eval"))
    if setting.get("limit"):
        items = min(items, setting["limit"])
    if "shard" in wc:
        index, count = map(int, wc["shard"].split("-of-"))
        items = items * (index + 1) // count - items * index // count
    seconds = items / rate
    if rule == "generate":
        seconds *= max(1.0, answer_tokens(config, wc.get("setting", ""), setting) / config["estimate"]["reference_new_tokens"])
    if rule == "loglik":  # rate is in images per second for ImageNet's 1000 classes; cost grows with the classes
        seconds *= config["estimate"]["classes"].get(dataset, 1000) / 1000
    return items, seconds
