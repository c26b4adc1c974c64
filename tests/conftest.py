import os
import subprocess
import sys
from pathlib import Path

import pytest

# Offline by construction: a stray hub id must fail at once, not retry for half a minute.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(*args, workdir, check=True, timeout=1200):
    """Run the workflow of this repository in ``workdir`` (its own .snakemake metadata)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HOME": str(Path(workdir) / ".hf")}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    proc.output = proc.stdout + proc.stderr  # Snakemake prints errors to either stream
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def small_demo_config() -> dict:
    """The embedded demo with fewer model jobs, for the test suite: two of its three VLMs (the trained LLaVA and
    BLIP-2), two label-set sizes and two probe positions. Every rule, table and report page still runs, and the
    world and its models are the demo's; a job costs its process start-up."""
    import yaml

    config = yaml.safe_load((REPO / "demo" / "config.yaml").read_text())
    dropped_models = {"tiny-llava-next-mistral"}
    kept_settings = {"table9": {"k2", "k30", "clip_k2", "clip_k30"}, "table10": {"probe_posm1", "probe_avg"}}
    for model in dropped_models:
        del config["models"][model]
    for name, table in config["tables"].items():
        for group in table["groups"]:
            group["models"] = [m for m in group["models"] if m not in dropped_models]
            if name in kept_settings:
                group["columns"] = [c for c in group["columns"] if c["setting"] in kept_settings[name]]
        table["groups"] = [g for g in table["groups"] if g["models"] and g["columns"]]
    return config


SMALL_DEMO = small_demo_config()


@pytest.fixture(scope="session")
def small_demo_file(tmp_path_factory):
    import yaml

    path = tmp_path_factory.mktemp("config") / "demo-small.yaml"
    path.write_text(yaml.safe_dump(SMALL_DEMO, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, small_demo_file):
    """The embedded demo DAG (the smaller test variant), run once for the session."""
    import time

    workdir = tmp_path_factory.mktemp("demo-run")
    start = time.time()
    snakemake("--configfile", str(small_demo_file), "--profile", str(REPO / "profiles" / "local"), "--cores", "2", workdir=workdir)
    (workdir / "wall_seconds").write_text(f"{time.time() - start:.3f}")  # for the overhead benchmark's test
    return workdir


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """One tiny model per family, built once (a fraction of a second each)."""
    from vlmrepro.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny")
    specs = {
        "llava": {},
        "llava_next": {"text_model": "mistral"},
        "blip2": {},
        "instructblip": {},
        "open_clip": {},
    }
    for family, spec in specs.items():
        build_tiny(family, root / family, spec)
    return root
