"""Cluster runs: requests from the config, the check before submission, and the SLURM profile against fake SLURM
commands (tests/fake_slurm.py) that answer as SLURM 22.05 does."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, DEMO, DEMO_FILE, REPO
from vlmrepro import cluster, runs
from vlmrepro.costs import job_cost
from vlmrepro.runs import run_config

SMALL_PARTITIONS = {  # the single node: 2 CPUs, 24 GB, partitions cpu and gpu, no GPUs
    "partitions": {
        "cpu": {"max_gpu": 0, "max_runtime": 1440, "max_mem_mb": 24000, "max_cpus_per_task": 2},
        "gpu": {"max_gpu": 0, "max_runtime": 2880, "max_mem_mb": 24000, "max_cpus_per_task": 2},
    }
}


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def paper():
    return run_config([])


def test_requests_come_from_the_config_layers(paper):
    wildcards = {"model": "llava-1.5-13b", "dataset": "imagenet", "setting": "open_world", "shard": "0-of-25"}
    request = cluster.job_request(paper, "generate", wildcards)
    assert (request["cpus"], request["mem_mb"], request["gpu"]) == (8, 96000, 1)
    assert request["sources"]["cpus"] == "resources.generate.cpus"
    assert request["sources"]["mem_mb"] == "models.llava-1.5-13b.resources.mem_mb"  # a 13B model asks for more
    assert "gpu_model" not in request  # any GPU unless the config names a type
    # runtime auto: the estimate's seconds on the reference GPU x runtime_factor, at least runtime_min
    _, seconds = job_cost(paper, "generate", wildcards)
    assert request["runtime"] == max(30, -(-seconds * 3 // 60))
    probe = cluster.job_request(
        paper, "probe", {"model": "llava-1.5-7b", "dataset": "imagenet", "setting": "probe_last"}
    )
    assert (probe["cpus"], probe["mem_mb"], probe["runtime"], probe["gpu"]) == (16, 96000, 1440, 0)
    # a fine-tune's wall time is its GPU time spread over its GPUs
    finetune = cluster.job_request(paper, "finetune", {"model": "llava-proj-imagenet"})
    _, gpu_seconds = job_cost(paper, "finetune", {"model": "llava-proj-imagenet"})
    assert finetune["gpu"] == 4 and finetune["runtime"] == -(-gpu_seconds / 4 * 3 // 60)
    # the evaluation of a fine-tuned model uses its base model's entry and one GPU
    tuned = cluster.job_request(paper, "generate", {**wildcards, "model": "llava-proj-imagenet", "shard": "0-of-25"})
    assert tuned["gpu"] == 1 and tuned["sources"]["gpu"] == "models.llava-1.5-7b.gpus"


def test_gpu_requests_only_where_a_gpu_is_used(paper):
    config = copy.deepcopy(paper)
    config["cluster"]["gpu_model"] = "h100"
    wildcards = {"model": "llava-1.5-7b", "dataset": "imagenet", "setting": "open_world", "shard": "0-of-25"}
    assert cluster.job_request(config, "generate", wildcards)["gpu_model"] == "h100"
    assert "gpu_model" not in cluster.job_request(config, "probe", {**wildcards, "setting": "probe_last"})
    config["models"]["llava-1.5-7b"]["gpus"] = 0
    request = cluster.job_request(config, "generate", wildcards)
    assert request["gpu"] == 0 and "gpu_model" not in request
    config = copy.deepcopy(paper)
    config["device"] = "cpu"
    assert cluster.job_request(config, "generate", wildcards)["gpu"] == 0


def test_site_caps_lower_requests_and_say_so(paper):
    config = copy.deepcopy(paper)
    config["cluster"] |= {"max_cpus": 2, "max_mem_mb": 20000}
    request = cluster.job_request(config, "finetune", {"model": "llava-proj-flowers102"})
    assert (request["cpus"], request["mem_mb"]) == (2, 20000)
    assert request["sources"]["cpus"] == "cluster.max_cpus"


def test_a_request_key_for_no_rule_stops_with_its_name(paper):
    config = copy.deepcopy(paper)
    config["resources"]["generation"] = {"cpus": 4}
    assert any("resources.generation" in e for e in cluster.check_config(config))


def test_compute_rules_are_exactly_the_rules_without_localrules():
    text = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    local = set()
    for block in re.findall(r"^localrules:\n((?:    \w+,\n)+)", text, re.M):
        local |= set(re.findall(r"\w+", block))
    rules = set(re.findall(r"^rule (\w+):", text, re.M))
    with_requests = set(re.findall(r'\*\*compute_resources\("(\w+)"\)', text))
    assert with_requests == rules - local == cluster.COMPUTE_RULES


def test_site_config_is_layered_over_the_run_config(tmp_path):
    site = write_yaml(tmp_path / "site.yaml", {"cluster": {"account": "lab"}, "resources": {"generate": {"cpus": 4}}})
    assert runs.is_site_config(site) and not runs.is_site_config(DEMO_FILE)
    config = run_config(["--configfile", site])
    assert "llava-1.5-7b" in config["models"]  # the paper, with the site's values over it
    assert config["resources"]["generate"] == {"cpus": 4, "mem_mb": 64000, "runtime": "auto"}
    config = run_config(["--configfile", str(DEMO_FILE), site])
    assert "llava-1.5-7b" not in config["models"] and config["cluster"]["account"] == "lab"
    # a second site config changes only what it holds
    more = write_yaml(tmp_path / "more.yaml", {"resources": {"generate": {"mem_mb": 128000}}})
    config = run_config(["--configfile", site, more])
    assert config["resources"]["generate"] == {"cpus": 4, "mem_mb": 128000, "runtime": "auto"}
    assert config["cluster"]["account"] == "lab"


def check(*args):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop(cluster.PARTITIONS_VARIABLE, None)
    return subprocess.run(
        [sys.executable, "-m", "vlmrepro.cluster", *args], capture_output=True, text=True, env=env, cwd=REPO
    )


def test_cluster_check_lists_the_jobs_no_partition_can_run(tmp_path):
    partitions = write_yaml(tmp_path / "partitions.yaml", SMALL_PARTITIONS)
    site = write_yaml(tmp_path / "site.yaml", {"cluster": {"partitions": partitions}})
    proc = check("--configfile", site, "--directory", str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    header = re.search(r"cluster check: (\d+) of (\d+) compute jobs fit no partition of (.*):", out)
    assert header and header[3] == partitions and int(header[2]) > 1000
    counts = [int(n) for n in re.findall(r"^  rule \w+ x (\d+) ", out, re.M)]
    assert sum(counts) == int(header[1])
    # each group names the rule, an example request, each partition's shortfalls and the keys to change
    # (the example job is any of the group's: the 13B models ask for more memory than the default)
    block = re.search(
        r"^  rule generate x \d+ [^\n]*requests 8 CPUs, \d+ MB, \d+ min, 1 GPU\n(.*?)\n(?=  rule|Change)",
        out,
        re.S | re.M,
    )[1]
    assert re.search(r"partition cpu: 8 CPUs > 2; \d+ MB > 24000 MB; 1 GPU > 0", block)
    assert "set by: resources.generate.cpus, resources.generate.mem_mb, models." in block
    assert re.search(r"rule finetune x \d+ .*\n.*\n      partition gpu: .*min > 2880 min", out)
    # (that the shipped partitions fit the whole paper, test_workflow's estimate test shows: make estimate checks too)


def test_a_cpu_only_demo_asks_for_no_gpu(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "slurm"), "-n"]
    proc = subprocess.run(
        [*cmd, "--configfile", str(DEMO_FILE), "--directory", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    resources = re.findall(r"^\s+resources: (.*)$", proc.stdout, re.M)
    assert any("cpus_per_task=2" in r and "mem_mb=4000" in r and "runtime=30" in r for r in resources)
    assert not any("gpu" in r for r in resources)


# --- through the SLURM executor, with fake SLURM commands ------------------------------------------------------


@pytest.fixture
def fake_slurm(tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-state"
    bin_dir.mkdir()
    for command in ("sbatch", "sacct", "squeue", "sinfo", "scontrol", "scancel", "sacctmgr", "srun"):
        (bin_dir / command).symlink_to(REPO / "tests" / "fake_slurm.py")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), str(BIN), os.environ["PATH"]]),
        "FAKE_SLURM_DIR": str(state),
    }
    env.pop(cluster.PARTITIONS_VARIABLE, None)
    return env, state


def run_on_fake_slurm(env, workdir, *args, cwd, timeout=300):
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles" / "slurm")]
    cmd += ["--directory", str(workdir), "--slurm-init-seconds-before-status-checks", "1", "--retries", "0", *args]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    return proc.stdout + proc.stderr, time.time() - start


def submissions(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "submissions.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_cancelled_job_fails_the_run_and_requests_follow_the_config(fake_slurm, tmp_path):
    """The demo from another directory with a site config: the partition file is found, each job carries the
    config's requests and a readable comment, and a job cancelled by root (sacct: "CANCELLED by 0") fails the run
    instead of leaving it waiting forever (the executor's 2.8.0 reads only the bare state)."""
    env, state = fake_slurm
    site = write_yaml(tmp_path / "site.yaml", {"cluster": {"account": "demo-account"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    output, seconds = run_on_fake_slurm(env, tmp_path / "demo-run", "--configfile", str(DEMO_FILE), site, cwd=elsewhere)
    assert "SLURM status is: 'CANCELLED'" in output and "At least one job did not complete" in output, output[-3000:]
    assert seconds < 200
    jobs = submissions(state)
    assert {j["comment"] for j in jobs} >= {
        "rule_build_world_wildcards_shapes",
        "rule_build_tiny_model_wildcards_tiny-blip2",
    }
    for job in jobs:
        assert re.fullmatch(r"vlmrepro_[0-9a-f-]{36}", job["job-name"])
        assert (job["account"], job["partition"]) == ("demo-account", "cpu")  # profiles/slurm/partitions.yaml
        assert (job["cpus-per-task"], job["mem"], job["time"]) == ("2", "4000", "30")
        assert "gpus" not in job and "array" not in job


@pytest.mark.slow
def test_gpu_jobs_ask_for_their_models_gpus_and_cpu_jobs_for_none(fake_slurm, demo_run, tmp_path):
    """The finished demo with its evaluations and fine-tunes forced again, as if on GPUs: each submission carries
    the requests of its rule and model."""
    env, state = fake_slurm
    workdir = tmp_path / "demo-run"
    shutil.copytree(demo_run, workdir, symlinks=True)
    config = copy.deepcopy(DEMO)
    config["device"] = "cuda"
    config["models"]["tiny-llava"]["gpus"] = 1
    config["models"]["tiny-llava"]["resources"] = {"mem_mb": 6000}
    config["finetunes"]["tiny-llava-proj"]["gpus"] = 2
    config["cluster"] = {"gpu_model": "h100"}
    config["resources"] |= {"generate": {"cpus": 1, "mem_mb": 3000}, "finetune": {"cpus": 2, "mem_mb": 5000}}
    configfile = write_yaml(tmp_path / "gpu.yaml", config)
    rules = ["generate", "loglik", "clip_zero_shot", "extract_features", "finetune"]
    # mtime only: the changed device and counts are requests here, not new results
    output, _ = run_on_fake_slurm(
        env, workdir, "--configfile", configfile, "--forcerun", *rules, "--rerun-triggers", "mtime", cwd=tmp_path
    )
    assert "SLURM status is: 'CANCELLED'" in output, output[-3000:]
    by_rule: dict[str, list[dict]] = {}
    for job in submissions(state):
        by_rule.setdefault(re.match(r"rule_(\w+?)_wildcards_", job["comment"])[1], []).append(job)
    assert set(rules) <= by_rule.keys()
    for rule, jobs in by_rule.items():
        for job in jobs:
            model = job["comment"].split("_wildcards_")[1]
            on_gpu = (rule != "finetune" and model.startswith("tiny-llava")) or model.startswith("tiny-llava-proj")
            if rule == "finetune":
                assert job.get("gpus") == ("h100:2" if model.startswith("tiny-llava-proj") else None)
                assert (job["cpus-per-task"], job["mem"]) == ("2", "5000")
            else:
                assert job.get("gpus") == ("h100:1" if on_gpu else None), job["comment"]
            if rule == "generate":
                memory = "6000" if model.startswith("tiny-llava") else "3000"
                assert (job["cpus-per-task"], job["mem"]) == ("1", memory)
            assert job["partition"] == ("gpu" if on_gpu else "cpu")
