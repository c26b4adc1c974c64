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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The embedded demo DAG, run once for the session."""
    workdir = tmp_path_factory.mktemp("demo-run")
    snakemake("--configfile", str(REPO / "demo" / "config.yaml"), "--profile", str(REPO / "profiles" / "local"), "--cores", "2", workdir=workdir)
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
