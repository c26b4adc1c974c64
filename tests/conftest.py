import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Offline by construction: a stray hub id must fail at once, not retry for half a minute.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake_command(*args, workdir, threads=True):
    """The command and environment that run the workflow of this repository in ``workdir`` (its own .snakemake
    metadata). With ``threads`` the bookkeeping rules (``run:``) execute in threads, as under the README's profiles:
    in a process of their own each would parse the whole workflow again (~3 s a job)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HOME": str(Path(workdir) / ".hf")}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    return [*cmd, *(["--force-use-threads"] if threads else []), *args], env


def snakemake(*args, workdir, check=True, timeout=1200):
    """Run the workflow (see :func:`snakemake_command`) to its end."""
    cmd, env = snakemake_command(*args, workdir=workdir)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    proc.output = proc.stdout + proc.stderr  # Snakemake prints errors to either stream
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


DEMO_FILE = REPO / "demo" / "config.yaml"
DEMO = yaml.safe_load(DEMO_FILE.read_text())


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The embedded demo, as `make demo` runs it, once for the session."""
    import time

    workdir = tmp_path_factory.mktemp("demo-run")
    start = time.time()
    snakemake("--configfile", str(DEMO_FILE), "--profile", str(REPO / "profiles" / "local"), "--cores", "2", workdir=workdir)
    (workdir / "wall_seconds").write_text(f"{time.time() - start:.3f}")  # for the overhead benchmark's test
    return workdir


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """One tiny model per family on the paper's real tokenizers (fetched at install time), built once."""
    from vlmrepro.demo.tiny import build_tiny
    from vlmrepro.reference_files import ensure_reference_files

    ensure_reference_files()
    root = tmp_path_factory.mktemp("tiny")
    real = {"tokenizer": "real"}
    specs = {
        "llava": real,
        "llava_next": {"text_model": "mistral", **real},
        "blip2": real,
        "instructblip": real,
        "open_clip": {},
    }
    for family, spec in specs.items():
        build_tiny(family, root / family, spec)
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: on a busy 2-core machine extra torch threads only spin (~0.8 s a forward instead of ~5 ms)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
