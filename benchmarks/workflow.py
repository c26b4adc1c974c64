"""Workflow overheads: the embedded demo's wall time against the time its jobs ran (from Snakemake's own job
records, .snakemake/metadata: start and end of every job), and `snakemake -n` on the full-paper config.

    python benchmarks/workflow.py demo [--cores 2] [--directory DIR]   # runs the demo DAG from scratch (~11 min)
    python benchmarks/workflow.py dry-run                               # plans the whole paper
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snakemake_command() -> list[str]:
    return [sys.executable, "-m", "snakemake"]


def job_intervals(workdir: Path) -> list[dict]:
    """One entry per job that ran: rule, start, end (a job with several outputs has one record per output, all
    with its job hash: the earliest start and latest end are the job's)."""
    jobs = {}
    for record in (workdir / ".snakemake" / "metadata").iterdir():
        meta = json.loads(record.read_text())
        if meta.get("starttime") and meta.get("endtime"):
            job = jobs.setdefault(meta["job_hash"], {"rule": meta["rule"], "start": meta["starttime"], "end": 0.0})
            job["start"], job["end"] = min(job["start"], meta["starttime"]), max(job["end"], meta["endtime"])
    return sorted(jobs.values(), key=lambda j: j["start"])


def busy_seconds(intervals: list[dict]) -> float:
    """Length of the union of the jobs' intervals: the time at least one job was running."""
    total, current = 0.0, None
    for job in intervals:
        if current is None or job["start"] > current[1]:
            total += current[1] - current[0] if current else 0.0
            current = [job["start"], job["end"]]
        else:
            current[1] = max(current[1], job["end"])
    return total + (current[1] - current[0] if current else 0.0)


def overhead_report(wall: float, intervals: list[dict]) -> dict:
    busy = busy_seconds(intervals)
    per_rule = defaultdict(float)
    for job in intervals:
        per_rule[job["rule"]] += job["end"] - job["start"]
    return {
        "wall_s": round(wall, 1),
        "jobs": len(intervals),
        "busy_s": round(busy, 1),
        "job_seconds": round(sum(per_rule.values()), 1),
        "overhead_s": round(wall - busy, 1),
        "overhead_pct": round(100 * (wall - busy) / wall, 1),
        "top_rules": sorted(((r, round(s, 1)) for r, s in per_rule.items()), key=lambda x: -x[1])[:8],
    }


def run_demo(args) -> dict:
    workdir = Path(args.directory).resolve()
    if workdir.exists() and not args.keep:
        shutil.rmtree(workdir)
    command = snakemake_command() + [
        "--configfile", str(ROOT / args.configfile), "--directory", str(workdir), "--profile",
        str(ROOT / "profiles/local"), "--cores", str(args.cores), "--quiet", "rules",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.time()
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    report = overhead_report(time.time() - start, job_intervals(workdir))
    print(f"\n## Embedded demo DAG ({args.configfile}) on {args.cores} cores")
    print(f"wall {report['wall_s']} s · {report['jobs']} jobs · jobs running {report['busy_s']} s "
          f"(job time summed: {report['job_seconds']} s) · Snakemake overhead {report['overhead_s']} s = "
          f"{report['overhead_pct']} % of wall (target < 20 %)")  # fmt: skip
    print("most expensive rules (summed job seconds):", report["top_rules"])
    return report


def run_dry_run(args) -> dict:
    command = snakemake_command() + ["-n", "--quiet", "rules", "--cores", "1"]
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - start
    if result.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{result.stderr[-3000:]}")
    jobs = next((line.split()[-1] for line in result.stdout.splitlines() if line.startswith("total")), "?")
    print(f"\n## snakemake -n on config.yaml (the whole paper)\n{jobs} jobs planned in {seconds:.1f} s (target < 15 s)")
    return {"seconds": round(seconds, 1), "jobs": jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    demo = sub.add_parser("demo")
    demo.add_argument("--cores", type=int, default=2)
    demo.add_argument("--configfile", default="demo/config.yaml")
    demo.add_argument("--directory", default="demo-bench")
    demo.add_argument("--keep", action="store_true", help="do not delete an existing directory first")
    sub.add_parser("dry-run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = run_demo(args) if args.what == "demo" else run_dry_run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report))


if __name__ == "__main__":
    main()
