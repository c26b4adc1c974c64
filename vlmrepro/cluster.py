"""What each job asks a cluster for, and a check that a cluster can give it, before anything is submitted.

Requests are config values (``resources`` and ``cluster``; README "Cluster (SLURM)"), not profile values, so a
site adapts the whole run with one small config file and the profile keeps only executor settings. Every compute
rule takes its ``resources:`` from :func:`snakemake_resources`:

- ``cpus``, ``mem_mb`` and ``runtime`` (minutes) come from ``resources.default``, then ``resources.<rule>``, then
  the model's ``models.<m>.resources`` (a fine-tuned model uses its base model's) or, for ``finetune``, the
  recipe's ``finetunes.<r>.resources``; ``cluster.max_cpus`` / ``cluster.max_mem_mb`` cap them (a site's node size);
- ``runtime: auto`` is the job's time on the reference GPU from the ``make estimate`` throughput table, times
  ``cluster.runtime_factor``, at least ``cluster.runtime_min``;
- a GPU (``gpu``) only for a rule that runs a model on one, with the model's (or recipe's) ``gpus``, and none when
  that is 0 or ``device`` is ``cpu``; a GPU type (``gpu_model``) only when the config names one.

``python -m vlmrepro.cluster [snakemake arguments]`` (``make cluster-check``) plans the run, computes every job's
request and lists the jobs that no partition of the partitions file can run, with the config key to change.
"""

from __future__ import annotations

import math
import os
import sys
from functools import lru_cache
from pathlib import Path


from vlmrepro.costs import GPU_RULES, job_cost
from vlmrepro.registry import base_model, recipe_of

REPO = Path(__file__).resolve().parents[1]


# rules that run a model on a GPU, and where their GPU count comes from
MODEL_GPU_RULES = frozenset(
    {"generate", "loglik", "extract_features", "clip_zero_shot", "check_invariance", "lmms_eval"}
)
RECIPE_GPU_RULES = frozenset({"finetune"})

# the rules that go to compute nodes (every other rule is a localrule of the submitting node); resources.<key>
# must be one of these or "default"
COMPUTE_RULES = frozenset(
    {
        *MODEL_GPU_RULES,
        *RECIPE_GPU_RULES,
        "api_generate",
        "build_imagenet_manifest",
        "build_instruction_mix",
        "build_tiny_model",
        "build_world",
        "correlate_frequency",
        "count_frequency",
        "prepare_split",
        "probe",
        "tokenize_corpus",
        "train_world_model",
        "world_corpus",
        "world_dataset",
    }
)
FIELDS = ("cpus", "mem_mb", "runtime")
PARTITIONS_VARIABLE = "SNAKEMAKE_SLURM_PARTITIONS"


def gpus_of(config: dict, rule: str, wildcards: dict[str, str]) -> tuple[int, str]:
    """GPUs the job runs on, and the config key that says so."""
    if config["device"] == "cpu":
        return 0, "device"
    model = wildcards.get("model", "")
    if rule in RECIPE_GPU_RULES:
        recipe = recipe_of(config, model)
        return config["finetunes"][recipe]["gpus"], f"finetunes.{recipe}.gpus"
    if rule in MODEL_GPU_RULES:
        base = base_model(config, model)
        gpus = config["models"][base]["gpus"]
        # an evaluation of a fine-tuned model runs on one GPU, whatever its base asks for
        return (min(gpus, 1), f"models.{base}.gpus") if base != model else (gpus, f"models.{model}.gpus")
    return 0, f"{rule} runs no model on a GPU"


def _layers(config: dict, rule: str, wildcards: dict[str, str]) -> list[tuple[str, dict]]:
    """(config key, values) from the least to the most specific."""
    layers = [("resources.default", config["resources"]["default"])]
    if rule in config["resources"]:
        layers.append((f"resources.{rule}", config["resources"][rule]))
    model = wildcards.get("model")
    if model is None:
        return layers
    if rule in RECIPE_GPU_RULES:
        recipe = recipe_of(config, model)
        layers.append((f"finetunes.{recipe}.resources", config["finetunes"][recipe].get("resources", {})))
    else:
        base = base_model(config, model)
        layers.append((f"models.{base}.resources", config["models"][base].get("resources", {})))
    return layers


def _auto_runtime(config: dict, rule: str, wildcards: dict[str, str], gpus: int) -> int:
    if rule not in GPU_RULES:
        raise ValueError(f"resources.{rule}.runtime: auto needs a throughput for rule {rule} (estimate.throughput)")
    _, gpu_seconds = job_cost(config, rule, wildcards)
    wall_seconds = gpu_seconds / max(gpus, 1) if rule in RECIPE_GPU_RULES else gpu_seconds
    cluster = config["cluster"]
    return max(cluster["runtime_min"], math.ceil(wall_seconds * cluster["runtime_factor"] / 60))


def job_request(config: dict, rule: str, wildcards: dict[str, str]) -> dict:
    """cpus, mem_mb, runtime (minutes), gpu, gpu_model of one job, and in ``sources`` the config key of each."""
    request, sources = {}, {}
    for key, values in _layers(config, rule, wildcards):
        for field in (*FIELDS, "gpu_model"):
            if values.get(field) is not None:
                request[field], sources[field] = values[field], f"{key}.{field}"
    request["gpu"], sources["gpu"] = gpus_of(config, rule, wildcards)
    cluster = config["cluster"]
    if request["gpu"] == 0:
        request.pop("gpu_model", None)
    elif "gpu_model" not in request and cluster.get("gpu_model"):
        request["gpu_model"], sources["gpu_model"] = cluster["gpu_model"], "cluster.gpu_model"
    if request["runtime"] == "auto":
        request["runtime"] = _auto_runtime(config, rule, wildcards, request["gpu"])
        sources["runtime"] += " (auto: estimate.throughput x cluster.runtime_factor)"
    for field, cap in (("cpus", "max_cpus"), ("mem_mb", "max_mem_mb")):
        if cluster.get(cap) is not None and request[field] > cluster[cap]:
            request[field], sources[field] = cluster[cap], f"cluster.{cap}"
    return {**request, "sources": sources}


def snakemake_resources(config: dict, rule: str) -> dict:
    """``resources:`` of a compute rule: one function per resource, each reading the job's request once."""

    @lru_cache(maxsize=None)
    def request(items: tuple) -> dict:
        return job_request(config, rule, dict(items))

    def field(name):
        # None drops the resource: no --gpus for a CPU job, no GPU type unless the config names one
        return lambda wildcards: request(tuple(wildcards.items())).get(name) or None

    resources = {"cpus_per_task": field("cpus"), "mem_mb": field("mem_mb"), "runtime": field("runtime")}
    resources |= {"gpu": field("gpu"), "gpu_model": field("gpu_model")}
    if config["cluster"].get("account"):
        resources["slurm_account"] = config["cluster"]["account"]
    return resources


def partitions_file(config: dict, workflow_dir: str | Path) -> Path:
    """The partition limits the SLURM executor picks partitions by: ``$SNAKEMAKE_SLURM_PARTITIONS`` when set (the
    executor's own variable), else ``cluster.partitions`` relative to the workflow directory, so that
    ``--directory`` does not move it."""
    if os.environ.get(PARTITIONS_VARIABLE):
        return Path(os.environ[PARTITIONS_VARIABLE])
    return Path(workflow_dir, config["cluster"]["partitions"]).resolve()


def check_config(config: dict) -> list[str]:
    """Config errors of the request keys that the schema cannot express."""
    errors = [
        f"resources.{key}: no compute rule of that name (expected default or one of {sorted(COMPUTE_RULES)})"
        for key in config.get("resources", {})
        if key != "default" and key not in COMPUTE_RULES
    ]
    if config.get("resources", {}).get("default", {}).get("runtime") == "auto":
        errors.append("resources.default.runtime: auto is for rules with a throughput; give minutes here")
    return errors


def read_cancelled_jobs_as_failed() -> None:
    """Make the SLURM executor fail a cancelled job instead of waiting for it forever.

    snakemake-executor-plugin-slurm 2.8.0 (the newest release) compares the State column of ``sacct`` exactly with
    its failure states, but sacct reports a job that a user or an administrator cancelled as ``CANCELLED by <uid>``,
    so the executor takes it for a running job and the run never ends. Its status query is wrapped to keep the first
    word of every state (SLURM's state names are single words). A no-op where the plugin is not installed."""
    try:
        import snakemake_executor_plugin_slurm as plugin
    except ImportError:
        return
    query = plugin.query_job_status
    if getattr(query, "keeps_first_word", False):
        return

    async def query_first_word(command, logger):
        states, seconds = await query(command, logger)
        if states is not None:
            states = {job: state.split()[0] if state.strip() else state for job, state in states.items()}
        return states, seconds

    query_first_word.keeps_first_word = True
    plugin.query_job_status = query_first_word


# --- the check before submission ---------------------------------------------------------------------------------


def _gpus(n: int) -> str:
    return f"{n} GPU" + ("s" if n != 1 else "")


def _shortfalls(limits, request: dict) -> dict[str, str]:
    """Why a partition cannot run a request, per requested field."""
    out = {}
    cpu_limit = min(limits.max_cpus_per_task, limits.max_threads)
    if request["cpus"] > cpu_limit:
        out["cpus"] = f"{request['cpus']} CPUs > {cpu_limit:g}"
    if request["mem_mb"] > limits.max_mem_mb:
        out["mem_mb"] = f"{request['mem_mb']} MB > {limits.max_mem_mb:g} MB"
    if request["runtime"] > limits.max_runtime:
        out["runtime"] = f"{request['runtime']} min > {limits.max_runtime:g} min"
    if request["gpu"] > limits.max_gpu:
        out["gpu"] = f"{_gpus(request['gpu'])} > {limits.max_gpu}"
    model = request.get("gpu_model")
    if request["gpu"] and model and limits.available_gpu_models and model not in limits.available_gpu_models:
        out["gpu_model"] = f"GPU type {model} not in {limits.available_gpu_models}"
    return out


def _fits(partition, request: dict) -> bool:
    """The executor's own test (its partition scoring), so the check agrees with what it will submit."""
    resources = {"cpus_per_task": request["cpus"], "mem_mb": request["mem_mb"], "runtime": request["runtime"]}
    if request["gpu"]:
        resources |= {"gpu": request["gpu"], "gpu_model": request.get("gpu_model")}
    job = type("PlannedJob", (), {"name": "planned", "threads": 1, "resources": resources})
    return partition.score_job_fit(job) is not None


def unmeetable(config: dict, jobs: list[tuple[str, dict]], partitions_path: Path) -> list[dict]:
    """Planned jobs that no partition can run, grouped by rule and by what each partition lacks: the count, one
    example (wildcards, request, each partition's shortfalls) and the config keys that set the requests at fault."""
    from snakemake_executor_plugin_slurm.partitions import read_partition_file

    partitions = read_partition_file(partitions_path)
    groups: dict[tuple, dict] = {}
    for rule, wildcards in jobs:
        if rule not in COMPUTE_RULES:
            continue
        request = job_request(config, rule, wildcards)
        if any(_fits(p, request) for p in partitions):
            continue
        why = {p.name: _shortfalls(p.limits, request) for p in partitions}
        key = (rule, tuple((name, tuple(fields)) for name, fields in why.items()))
        group = groups.setdefault(key, {"rule": rule, "example": wildcards, "request": request, "why": why})
        group["jobs"] = group.get("jobs", 0) + 1
        keys = group.setdefault("keys", {})
        for field in ("cpus", "mem_mb", "runtime", "gpu", "gpu_model"):
            if any(field in fields for fields in why.values()):
                keys.setdefault(request["sources"][field], None)
    return list(groups.values())


def describe_request(request: dict) -> str:
    gpus = (
        f", {_gpus(request['gpu'])}" + (f" ({request['gpu_model']})" if request.get("gpu_model") else "")
        if request["gpu"]
        else ""
    )
    return f"{request['cpus']} CPUs, {request['mem_mb']} MB, {request['runtime']} min{gpus}"


def format_problems(problems: list[dict], partitions_path: Path, n_jobs: int) -> str:
    if not problems:
        return f"cluster check: all {n_jobs} compute jobs fit a partition of {partitions_path}"
    total = sum(p["jobs"] for p in problems)
    lines = [f"cluster check: {total} of {n_jobs} compute jobs fit no partition of {partitions_path}:"]
    for p in problems:
        example = ", ".join(f"{k}={v}" for k, v in p["example"].items())
        lines.append(f"  rule {p['rule']} x {p['jobs']} (e.g. {example}): requests {describe_request(p['request'])}")
        for name, why in p["why"].items():
            lines.append(f"      partition {name}: {'; '.join(why.values()) or 'fits'}")
        keys = list(p["keys"])
        more = f" (and {len(keys) - 6} more)" if len(keys) > 6 else ""
        lines.append(f"      set by: {', '.join(keys[:6])}{more}")
    lines.append("Change those config keys (in a site config: README 'Cluster (SLURM)') or the partitions file.")
    return "\n".join(lines)


def report(config: dict, jobs: list[tuple[str, dict]]) -> int:
    """Print the check of planned jobs against the partitions file; 1 when some job fits no partition."""
    path = partitions_file(config, REPO)
    problems = unmeetable(config, jobs, path)
    print(format_problems(problems, path, sum(rule in COMPUTE_RULES for rule, _ in jobs)))
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    from vlmrepro.runs import plan

    return report(*plan(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
