"""One configuration per run. Snakemake parses the workflow again in every job it starts as a process of its own
(a ``run:`` rule outside ``--force-use-threads``, any job on a cluster), reading the config files from disk anew; a
file edited mid-run would give those jobs other settings than the run planned with, and their stored params would
name the old ones. So the run's main process freezes the configuration it parsed into a snapshot that its jobs load
in place of the files (README "Editing the config during a run")."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

from .io import write_text

SNAPSHOT_VARIABLE = "VLMREPRO_RUN_CONFIG"  # inherited by local job processes and by SLURM jobs (sbatch exports it)
SNAPSHOT_FOLDER = Path(".snakemake") / "vlmrepro-config"  # in the working directory, which a cluster shares


def pin_to_run_start(workflow, config: dict) -> None:
    """In the main process, write ``config`` to a snapshot named by its content and point the jobs at it; in a
    job's process, replace ``config`` (in place: the workflow holds it) with the snapshot of the run it belongs to."""
    if workflow.is_main_process:
        if workflow.dryrun:  # starts no job
            return
        text = yaml.safe_dump(config, sort_keys=True, allow_unicode=True)
        path = (SNAPSHOT_FOLDER / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml").resolve()
        if not path.exists():
            write_text(path, text)
        os.environ[SNAPSHOT_VARIABLE] = str(path)
        return
    snapshot = os.environ.get(SNAPSHOT_VARIABLE)
    if not snapshot:  # a job started by another tool: its config files are all it has
        return
    try:
        frozen = yaml.safe_load(Path(snapshot).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuntimeError(
            f"{SNAPSHOT_VARIABLE}={snapshot}: the configuration this run started with cannot be read ({exc}); "
            "rerun the workflow"
        ) from None
    config.clear()
    config.update(frozen)
