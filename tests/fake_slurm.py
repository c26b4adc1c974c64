#!/usr/bin/env python3
"""SLURM's commands as the SLURM executor calls them, answering as SLURM 22.05 does, for tests without a cluster.

The test links this file as sbatch, sacct, squeue, sinfo, scontrol, scancel, sacctmgr and srun into a folder on
PATH. State lives in $FAKE_SLURM_DIR: every sbatch call is recorded (submissions.jsonl, the parsed options) and
each job's state is a file. $FAKE_SLURM_MODE says what a submitted job does:

- ``cancel``: nothing runs; the job is ``CANCELLED by 0`` at once, as after ``scancel`` by root;
- ``run``: the wrapped command runs in the background (srun runs its command as is) and ends COMPLETED or FAILED.
"""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake-slurm"))


def next_job_id() -> str:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "counter", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # the executor submits from two threads
        handle.seek(0)
        job_id = int(handle.read() or 1000) + 1
        handle.seek(0)
        handle.truncate()
        handle.write(str(job_id))
    return str(job_id)


def parse_options(args: list[str]) -> dict:
    """sbatch's options as {name: value} (``-A x``, ``--mem 4000``, ``--gpus=a100:1``, ``--wrap=...``)."""
    short = {"-A": "account", "-p": "partition", "-t": "time", "-D": "chdir", "-C": "constraint", "-c": "cpus-per-task"}
    options, i = {}, 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
        elif arg in short or (arg.startswith("--") and arg not in ("--parsable", "--requeue", "--no-requeue")):
            name, value = short.get(arg, arg[2:]), args[i + 1]
            i += 1
        else:
            name, value = arg.lstrip("-"), True
        options[name] = value
        i += 1
    return options


def sbatch(args: list[str]) -> int:
    options = parse_options(args)
    job_id = next_job_id()
    with open(STATE / "submissions.jsonl", "a") as handle:
        handle.write(json.dumps({"job_id": job_id, **options}) + "\n")
    state = STATE / f"{job_id}.state"
    if os.environ.get("FAKE_SLURM_MODE", "cancel") == "cancel":
        state.write_text("CANCELLED by 0")
    else:
        state.write_text("RUNNING")
        log = Path(str(options["output"]).replace("%j", job_id))
        log.parent.mkdir(parents=True, exist_ok=True)
        script = f"{options['wrap']}\nif [ $? -eq 0 ]; then echo COMPLETED > {state}; else echo FAILED > {state}; fi"
        env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURM_CPUS_PER_TASK": str(options.get("cpus-per-task", 1))}
        with open(log, "w") as out:
            subprocess.Popen(["bash", "-c", script], cwd=options.get("chdir"), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    print(job_id)
    return 0


def states() -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in STATE.glob("*.state")}


def sacct(args: list[str]) -> int:
    if "--name" in args:  # the executor's status query: JobIdRaw|State of the run's jobs
        for job_id, state in sorted(states().items()):
            print(f"{job_id}|{state}")
    return 0  # step reasons, accounts of past jobs: nothing recorded


def squeue(args: list[str]) -> int:
    for job_id, state in sorted(states().items()):
        print(f"{job_id}|{state.split()[0]}")  # squeue shows the bare state
    return 0


def scancel(args: list[str]) -> int:
    for job_id in args:
        if (STATE / f"{job_id}.state").exists():
            (STATE / f"{job_id}.state").write_text("CANCELLED by 0")
    return 0


def scontrol(args: list[str]) -> int:
    print("MinJobAge               = 300 sec\nMaxArraySize            = 1001")
    return 0


def srun(args: list[str]) -> int:
    while args and args[0].startswith("-"):  # srun -n1 --cpu-bind=q <command>
        args = args[1:]
    return subprocess.call(" ".join(args), shell=True)


def main() -> int:
    command, args = Path(sys.argv[0]).name, sys.argv[1:]
    handlers = {"sbatch": sbatch, "sacct": sacct, "squeue": squeue, "scancel": scancel, "scontrol": scontrol, "srun": srun}
    if command in handlers:
        return handlers[command](args)
    if command == "sacctmgr":  # the accounts of the user
        print("demo-account")
    return 0  # sinfo: present, nothing to say


if __name__ == "__main__":
    sys.exit(main())
