"""General benchmarks of Table 13 (TextVQA, POPE, MM-Vet) through lmms-eval, not re-implemented
(docs/protocol.md#table-13-general-benchmarks).

The harness runs as a subprocess on the model directory (llava-hf format, as every model of the registry) and writes
``<output>/<model name>/<date>_results.json`` with ``results[task]["<metric>,<filter>"]``; the cell's metric is
read from there and scaled to percent.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

HARNESS_MODELS = {"llava": "llava_hf", "llava_next": "llava_hf", "instructblip": "instructblip"}


def lmms_eval_command(python: str, model_dir: str, run: dict, output_dir) -> list[str]:
    if importlib.util.find_spec("lmms_eval") is None:
        raise RuntimeError(
            "lmms-eval is not installed in this environment: run the workflow with --software-deployment-method "
            "conda (envs/lmms_eval.yaml) or pip install lmms-eval==0.7.3"
        )
    if run["family"] not in HARNESS_MODELS:
        raise ValueError(f"no lmms-eval model adapter configured for family {run['family']!r}")
    model_args = f"pretrained={model_dir},dtype={run['dtype']}"
    return [
        python, "-m", "lmms_eval",
        "--model", HARNESS_MODELS[run["family"]],
        "--model_args", model_args,
        "--tasks", run["task"],
        "--batch_size", str(run["batch_size"]),
        "--output_path", str(output_dir),
        "--log_samples",
    ]  # fmt: skip


def read_lmms_eval_score(output_dir, run: dict) -> dict:
    """The score file of one (model, benchmark) cell from the newest lmms-eval results file under output_dir."""
    files = sorted(Path(output_dir).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"{output_dir}: lmms-eval wrote no *_results.json")
    results = json.loads(files[-1].read_text())["results"]
    task = results.get(run["task"])
    if task is None:
        raise KeyError(f"{files[-1]}: no results for task {run['task']!r} (has {sorted(results)})")
    key = f"{run['metric']},{run['filter']}"
    if key not in task:
        raise KeyError(f"{files[-1]}: task {run['task']!r} has no metric {key!r} (has {sorted(task)})")
    extra = {k.split(",")[0]: v for k, v in task.items() if isinstance(v, (int, float)) and not k.endswith("_stderr,none")}
    return {
        "accuracy": float(task[key]) * run["scale"],
        "metric": run["metric"],
        "task": run["task"],
        "harness_metrics": extra,
        "results_file": str(files[-1]),
    }
