"""How robust are the demo's findings? The demo's training and findings (the part of its DAG that
``results/report/findings.json`` needs: the world, its CLIP and LLaVA, the fine-tunes and every evaluation a finding
reads) run once per world/training seed and training thread count, each in a folder of its own; the script then
prints, per check of every finding, the measured quantity in each run, its minimum over all runs and the margin
the demo config asks for; then every score the findings read, with its range over the runs.

    python benchmarks/demo_robustness.py                       # seeds 0-4 x 1 and 2 training threads (~1 h here)
    python benchmarks/demo_robustness.py --seeds 0 --threads 1 # the committed demo's own training
    make demo-robustness

Seed k shifts every seed of the demo's training by k: the world's (images, corpora, which classes are frequent),
the trained models' (weight initialisation, data order) and the fine-tuning recipes' and probes'. Seed 0 with
one thread is the committed demo. A run whose findings file exists is reused (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = "results/report/findings.json"
RECIPE_SEED = 42  # a recipe's default seed (schemas/config.schema.yaml: finetunes.*.seed)


def seeded_config(config: dict, seed: int, threads: int) -> dict:
    """The demo config with every training seed shifted by ``seed`` and training on ``threads`` threads."""
    config = json.loads(json.dumps(config))
    config["train_threads"] = threads
    for spec in config["worlds"].values():
        spec["seed"] = spec.get("seed", 0) + seed
    for model in config["models"].values():
        if "train" in model:
            model["train"]["seed"] = model["train"].get("seed", 0) + seed
    for recipe in config["finetunes"].values():
        recipe["seed"] = recipe.get("seed", RECIPE_SEED) + seed
    for setting in config["settings"].values():
        if setting["kind"] == "probe":
            setting["probe_seed"] = setting.get("probe_seed", 0) + seed
    return config


def run_findings(config: dict, workdir: Path, cores: int) -> float:
    """Run the findings' part of the DAG in ``workdir``; returns the wall seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [
        sys.executable, "-m", "snakemake", FINDINGS, "--snakefile", str(ROOT / "Snakefile"), "--configfile",
        str(configfile), "--directory", str(workdir), "--profile", str(ROOT / "profiles/local"), "--cores", str(cores),
        "--quiet", "rules",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.time()
    with open(workdir / "snakemake.log", "w") as log:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"{workdir}: the demo's findings failed to run (exit {result.returncode}); see {workdir}/snakemake.log")
    return time.time() - start


def machine() -> str:
    import torch

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or platform.machine(),
    ) if Path("/proc/cpuinfo").exists() else platform.processor()  # fmt: skip
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"


def _number(value: float) -> str:
    """Shares and correlations (below 2) with two decimals, accuracy points with one."""
    return f"{value:.2f}" if abs(value) < 2 else f"{value:.1f}"


def table(runs: dict[str, list[dict]]) -> tuple[list[dict], str]:
    """Rows (one per check) and their markdown table: each run's measured quantity, the minimum, the margin the
    config asks for, and whether every run holds."""
    names = list(runs)
    rows = []
    for f, finding in enumerate(runs[names[0]]):
        for c, check in enumerate(finding["checks"]):
            values = [runs[name][f]["checks"][c]["measured"] for name in names]
            rows.append({
                "finding": finding["finding"],
                "check": check["check"],
                "values": values,
                "min": min(values),
                "required": check["required"],
                "holds_everywhere": all(runs[name][f]["checks"][c]["holds"] for name in names),
            })  # fmt: skip
    lines = [
        "| finding | check | " + " | ".join(names) + " | min | config margin | holds in every run |",
        "|---" * (len(names) + 5) + "|",
    ]
    for row in rows:
        numbers = [*row["values"], row["min"], row["required"]]
        cells = [row["finding"], row["check"], *map(_number, numbers)]
        lines.append("| " + " | ".join(cells) + f" | {'yes' if row['holds_everywhere'] else '**no**'} |")
    return rows, "\n".join(lines)


def spread(runs: dict[str, list[dict]]) -> str:
    """Markdown table of every score the findings read: its value in each run and its range (how much the demo's
    numbers move with the seed, the thread count and, by the same token, the machine)."""
    names = list(runs)
    per_run: dict[str, dict[str, float]] = {}
    for name in names:
        for finding in runs[name]:
            for check in finding["checks"]:
                for score, value in check["scores"].items():
                    per_run.setdefault(score, {})[name] = value
    lines = ["| score | " + " | ".join(names) + " | range |", "|---" * (len(names) + 2) + "|"]
    for score, by_run in per_run.items():
        cells = [_number(by_run[name]) if name in by_run else "" for name in names]  # a run may lack a score
        vals = list(by_run.values())
        lines.append(f"| {score} | " + " | ".join(cells) + f" | {_number(min(vals))} to {_number(max(vals))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="training threads (train_threads)")
    parser.add_argument("--configfile", default="demo/config.yaml")
    parser.add_argument("--directory", default="demo-robustness")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="delete earlier runs first")
    parser.add_argument("--json", default=None, help="also write the runs and the table rows here")
    args = parser.parse_args()

    base = yaml.safe_load((ROOT / args.configfile).read_text())
    directory = Path(args.directory).resolve()
    if args.fresh and directory.exists():
        shutil.rmtree(directory)
    runs, seconds = {}, {}
    for seed in args.seeds:
        for threads in args.threads:
            name = f"seed{seed}-threads{threads}"
            workdir = directory / name
            if not (workdir / FINDINGS).exists():
                seconds[name] = round(run_findings(seeded_config(base, seed, threads), workdir, args.cores))
                print(f"{name}: {seconds[name]} s", flush=True)
            runs[name] = json.loads((workdir / FINDINGS).read_text())
    rows, markdown = table(runs)
    print(f"\n## Demo findings over {len(runs)} runs (seeds {args.seeds} x training threads {args.threads})")
    print(f"machine: {machine()}\n")
    print(markdown)
    print("\nThe scores behind them:\n")
    print(spread(runs))
    failed = [f"{r['finding']}: {r['check']}" for r in rows if not r["holds_everywhere"]]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} checks hold in every run" + (f"; failing: {failed}" if failed else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "seconds": seconds, "runs": runs, "rows": rows}, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
