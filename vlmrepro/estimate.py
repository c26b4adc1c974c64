"""Before any GPU is spent: the jobs a run would start, per rule, with an estimate of their GPU hours.

``python -m vlmrepro.estimate [snakemake arguments]`` runs ``snakemake -n`` with the given arguments, reads every
planned job (rule and wildcards) and prices it (``vlmrepro.costs``), then checks every compute job's request against
the cluster's partitions (``vlmrepro.cluster``).
"""

from __future__ import annotations

import sys
from collections import defaultdict

from vlmrepro import cluster
from vlmrepro.costs import GPU_RULES, job_cost
from vlmrepro.runs import plan


def estimate(config: dict, jobs: list[tuple[str, dict[str, str]]]) -> list[dict]:
    rows: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "items": 0, "gpu_hours": 0.0})
    for rule, wc in jobs:
        row = rows[rule]
        row["jobs"] += 1
        if rule in GPU_RULES:
            items, seconds = job_cost(config, rule, wc)
            row["items"] += items
            row["gpu_hours"] += seconds / 3600
    return [{"rule": rule, **row} for rule, row in sorted(rows.items(), key=lambda kv: -kv[1]["gpu_hours"])]


def format_table(rows: list[dict], reference_gpu: str) -> str:
    lines = [f"{'rule':<24}{'jobs':>8}{'items':>14}{'GPU hours':>12}", "-" * 58]
    for r in rows:
        hours = f"{r['gpu_hours']:.1f}" if r["rule"] in GPU_RULES else "-"
        items = f"{r['items']:,}" if r["rule"] in GPU_RULES else "-"
        lines.append(f"{r['rule']:<24}{r['jobs']:>8}{items:>14}{hours:>12}")
    total = sum(r["gpu_hours"] for r in rows)
    lines += ["-" * 58, f"{'total':<24}{sum(r['jobs'] for r in rows):>8}{'':>14}{total:>12.1f}"]
    lines.append(f"GPU hours on {reference_gpu} (estimate.throughput); API and CPU jobs cost no GPU time.")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    config, jobs = plan(argv)
    print(format_table(estimate(config, jobs), config["estimate"]["reference_gpu"]))
    # the same plan checked against the cluster's partitions: a job no partition can run is named before submission
    return cluster.report(config, jobs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
