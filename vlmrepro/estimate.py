"""Before any GPU is spent: the jobs a run would start, per rule, with an estimate of their GPU hours.

``python -m vlmrepro.estimate [snakemake arguments]`` runs ``snakemake -n`` with the given arguments, reads every
planned job (rule and wildcards) and prices it with the item counts of the config (``datasets.<name>.sizes``) and
the per-model throughput table (``estimate.throughput``: items per second on the reference GPU). Generation time
grows with the generated length: the table's ``generate`` rate is for ``reference_new_tokens`` tokens and is scaled
by a setting's typical answer length above that (``estimate.answer_tokens``, at most its ``max_new_tokens``): greedy
answers stop at the end-of-sequence token, far below the cap (a fine-tuned model's class name is a few tokens of a
1,024-token cap).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from snakemake.utils import validate

from vlmrepro.registry import base_model, finetuned_models

REPO = Path(__file__).resolve().parents[1]

GPU_RULES = {
    "generate": "generate",
    "clip_zero_shot": "clip",
    "loglik": "loglik",
    "extract_features": "features",
    "finetune": "finetune",
    "lmms_eval": "benchmark",
}


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in a ``snakemake -n`` listing."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", dry_run_output):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        pairs = dict(p.split("=", 1) for p in wildcards[1].split(", ")) if wildcards else {}
        jobs.append((rule[1], pairs))
    return jobs


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


def estimate(config: dict, jobs: list[tuple[str, dict[str, str]]]) -> list[dict]:
    rows: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "items": 0, "gpu_hours": 0.0})
    for rule, wc in jobs:
        row = rows[rule]
        row["jobs"] += 1
        if rule in GPU_RULES:
            items, seconds = job_cost(config, rule, wc)
            row["items"] += items
            row["gpu_hours"] += seconds / 3600
    return [{"rule": rule, **row} for rule, row in sorted(rows.items(), key=lambda kv: -kv[1]["gpu_hours"])]


def format_table(rows: list[dict], reference_gpu: str) -> str:
    lines = [f"{'rule':<24}{'jobs':>8}{'items':>14}{'GPU hours':>12}", "-" * 58]
    for r in rows:
        hours = f"{r['gpu_hours']:.1f}" if r["rule"] in GPU_RULES else "-"
        items = f"{r['items']:,}" if r["rule"] in GPU_RULES else "-"
        lines.append(f"{r['rule']:<24}{r['jobs']:>8}{items:>14}{hours:>12}")
    total = sum(r["gpu_hours"] for r in rows)
    lines += ["-" * 58, f"{'total':<24}{sum(r['jobs'] for r in rows):>8}{'':>14}{total:>12.1f}"]
    lines.append(f"GPU hours on {reference_gpu} (estimate.throughput); API and CPU jobs cost no GPU time.")
    return "\n".join(lines)


def _option_values(argv: list[str], option: str) -> list[str]:
    """The values after ``option`` up to the next option (Snakemake's nargs="+" options)."""
    values = []
    for i, arg in enumerate(argv):
        if arg == option:
            rest = argv[i + 1 :]
            values += rest[: next((j for j, v in enumerate(rest) if v.startswith("-")), len(rest))]
    return values


def run_config(argv: list[str]) -> dict:
    """The config a ``snakemake`` call with these arguments runs with: config.yaml unless config files are given
    that are not site configs (the Snakefile's rule), the given files merged in order, ``--config`` last, and the
    schema's defaults filled in."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    from vlmrepro.cluster import is_site_config

    files = _option_values(argv, "--configfile") + _option_values(argv, "--configfiles")
    if not files or all(is_site_config(f) for f in files):
        files = [str(REPO / "config.yaml"), *files]
    config: dict = {}
    for f in files:
        update_config(config, yaml.safe_load(Path(f).read_text()))
    update_config(config, parse_config(_option_values(argv, "--config")))
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))  # fills in the documented defaults
    return config


def plan(argv: list[str]) -> tuple[dict, list[tuple[str, dict[str, str]]]]:
    """The config and the planned jobs of ``snakemake -n`` with these arguments."""
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [str(snakemake), "-s", str(REPO / "Snakefile"), "-n", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return run_config(argv), planned_jobs(proc.stdout)


def main(argv: list[str]) -> int:
    from vlmrepro import cluster

    config, jobs = plan(argv)
    print(format_table(estimate(config, jobs), config["estimate"]["reference_gpu"]))
    # the same plan checked against the cluster's partitions: a job no partition can run is named before submission
    return cluster.report(config, jobs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
