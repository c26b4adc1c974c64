"""What a ``snakemake`` call runs: its configuration and its planned jobs, for the tools that price or check a run
before it starts (``vlmrepro.estimate``, ``vlmrepro.cluster``) and for the Snakefile's own config layering.

Layering, in one place: ``config.yaml`` (the full paper) comes first and site configs (only ``cluster`` and
``resources``) are layered over it; any other config file (the demo, your own run) replaces it whole, so no paper
model or dataset leaks into another configuration.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "config.yaml"
SITE_KEYS = frozenset({"cluster", "resources"})


def is_site_config(path: str | Path) -> bool:
    """A config file holding only site keys (account, partitions, requests)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return isinstance(data, dict) and bool(data) and data.keys() <= SITE_KEYS


def layered_on_the_paper(config_files: list[str]) -> bool:
    """Whether a run given these config files starts from ``config.yaml``: none given, or site configs only."""
    return all(is_site_config(f) for f in config_files)


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in a ``snakemake -n`` listing."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", dry_run_output):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        pairs = dict(p.split("=", 1) for p in wildcards[1].split(", ")) if wildcards else {}
        jobs.append((rule[1], pairs))
    return jobs


def _option_values(argv: list[str], option: str) -> list[str]:
    """The values after ``option`` up to the next option (Snakemake's nargs="+" options)."""
    values = []
    for i, arg in enumerate(argv):
        if arg == option:
            rest = argv[i + 1 :]
            values += rest[: next((j for j, v in enumerate(rest) if v.startswith("-")), len(rest))]
    return values


def run_config(argv: list[str]) -> dict:
    """The config a ``snakemake`` call with these arguments runs with: config.yaml unless config files are given
    that are not site configs (the Snakefile's rule), the given files merged in order, ``--config`` last, and the
    schema's defaults filled in."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config, validate

    files = _option_values(argv, "--configfile") + _option_values(argv, "--configfiles")
    if layered_on_the_paper(files):
        files = [str(PAPER_CONFIG), *files]
    config: dict = {}
    for f in files:
        update_config(config, yaml.safe_load(Path(f).read_text()))
    update_config(config, parse_config(_option_values(argv, "--config")))
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))  # fills in the documented defaults
    return config


def plan(argv: list[str]) -> tuple[dict, list[tuple[str, dict[str, str]]]]:
    """The config and the planned jobs of ``snakemake -n`` with these arguments."""
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [str(snakemake), "-s", str(REPO / "Snakefile"), "-n", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return run_config(argv), planned_jobs(proc.stdout)
