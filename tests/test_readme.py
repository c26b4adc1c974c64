"""Every ```yaml snippet of README.md is valid, so a reader can paste it.

Each snippet is a mapping, recognised by its top-level keys:
- a SLURM partitions file (``partitions:``) must load in the SLURM executor;
- a Snakemake profile (a top-level ``executor``, ``jobs`` or ``cores``, options a config never has) must parse; its
  options are Snakemake's to check;
- anything else is a config fragment written under its top-level keys (``models:``, ``cluster:``, ...): entries to
  add to config.yaml, or a site config layered over it. It is merged into the paper's config.yaml as Snakemake
  merges config files, and must pass the checks every run starts with (rules/common.smk). A bare registry entry,
  not under its top-level key, fails the schema.
"""

import copy
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from vlmrepro.config import ConfigError, check_config, check_config_size

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SCHEMA = REPO / "schemas" / "config.schema.yaml"
PAPER_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())

# a fenced block, also one indented inside a list item (its closing fence has the same indent)
YAML_BLOCK = re.compile(r"^(?P<indent> *)```yaml\n(?P<body>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL)
PROFILE_KEYS = {"executor", "jobs", "cores"}


def readme_yaml_snippets(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, dedented body) of every ```yaml block."""
    return [(text.count("\n", 0, m.start()) + 1, textwrap.dedent(m["body"])) for m in YAML_BLOCK.finditer(text)]


def snippet_kind(snippet: dict) -> str:
    if "partitions" in snippet:
        return "partitions"
    if PROFILE_KEYS & snippet.keys():
        return "profile"
    return "config"


def check_snippet(text: str, tmp_path: Path) -> str:
    """Raise if the snippet is not valid as what its keys say it is; return that kind."""
    snippet = yaml.safe_load(text)
    assert isinstance(snippet, dict), "a snippet must be a mapping, written under its top-level key(s)"
    kind = snippet_kind(snippet)
    if kind == "partitions":
        from snakemake_executor_plugin_slurm.partitions import read_partition_file

        path = tmp_path / "partitions.yaml"
        path.write_text(text)
        assert read_partition_file(path)
    elif kind == "config":
        config = copy.deepcopy(PAPER_CONFIG)
        update_config(config, snippet)
        check_config_size(config)
        validate(config, str(SCHEMA))
        check_config(config)
    return kind


SNIPPETS = readme_yaml_snippets(README.read_text())


@pytest.mark.parametrize("text", [text for _, text in SNIPPETS], ids=[f"README.md:{line}" for line, _ in SNIPPETS])
def test_readme_yaml_snippet_is_valid(text, tmp_path):
    check_snippet(text, tmp_path)


def test_readme_snippets_are_found():
    # guards the extraction: a changed fence style must not leave nothing to check
    kinds = [snippet_kind(yaml.safe_load(text)) for _, text in SNIPPETS]
    assert kinds.count("config") >= 3 and "partitions" in kinds, kinds


BROKEN_SNIPPETS = {
    "bare registry entry": ("my-llava:\n  family: llava\n", WorkflowError, "'my-llava' was unexpected"),
    "unknown model key": (
        "models:\n  my-llava: {family: llava, hub: {repo: a/b}, template: '{question}', answer_marker: 'A:', batch: 8}\n",
        WorkflowError,
        "'batch' was unexpected",
    ),
    "table of an unknown model": (
        "tables:\n  t:\n    paper_table: Table 1\n    groups:\n"
        "      - {models: [nobody], datasets: [flowers102], columns: [{setting: open_world, paper: open-world}]}\n",
        ConfigError,
        "unknown model 'nobody'",
    ),
    "partition limit misspelt": ("partitions:\n  gpu: {max_gpus: 1}\n", TypeError, "max_gpus"),
    "not a mapping": ("- executor: slurm\n", AssertionError, "must be a mapping"),
}


@pytest.mark.parametrize("text, error, message", BROKEN_SNIPPETS.values(), ids=BROKEN_SNIPPETS)
def test_broken_snippet_fails(text, error, message, tmp_path):
    with pytest.raises(error, match=message):
        check_snippet(text, tmp_path)


def test_profile_snippet_only_parses(tmp_path):
    assert check_snippet("executor: slurm\njobs: 10\nlatency-wait: 60\n", tmp_path) == "profile"
