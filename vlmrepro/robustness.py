"""Invariance checks run as rules (issue: batch size and resume must not change a result).

* Batch size: the first ``subset`` items generated one at a time must equal the same items of the gathered output,
  which was generated at the configured batch size (left padding, fixed blocks).
* Resume: the subset generated with a write-ahead cache that already holds the first half (as a killed job leaves
  it) must equal the uninterrupted output.

On the CPU (float32) both are exact; on a GPU in bf16, padding can move a near-tie, and the share of identical
items is what the robustness table reports.
"""

from __future__ import annotations

from pathlib import Path

from .cache import WriteAheadCache
from .evaluate import run_generation
from .memory import resolve_batch_size
from .prompts import render

COMPARED = ("status", "output", "pred")


def _same(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in COMPARED)


def check_invariance(vlm, queries, reference, run: dict, revision: str, subset: int, work_dir, log=print) -> dict:
    """``reference``: the gathered records of the same queries (configured batch size, uninterrupted)."""
    queries, reference = queries[:subset], reference[:subset]
    args = (vlm.template, run["answer_marker"], run["max_new_tokens"])
    batch_size = resolve_batch_size(vlm, run, [render(vlm.template, q["question"]) for q in queries], [q["path"] for q in queries])
    answers = {"answer_from": run["answer_from"], "min_new_tokens": run["min_new_tokens"]}
    answers["reasoning_tags"] = run.get("reasoning_tags")
    batching = {"sort_block": run["sort_block"], "loader_workers": run["loader_workers"], **answers}
    one_by_one = run_generation(vlm, queries, *args, 1, revision, log=log, **answers)
    cache_file = Path(work_dir) / "interrupted.jsonl"
    cache_file.unlink(missing_ok=True)
    context = {"check": "resume", **run}
    half = len(queries) // 2
    run_generation(vlm, queries[:half], *args, batch_size, revision, log=log,
                   cache=WriteAheadCache(cache_file), cache_context=context, **batching)  # fmt: skip
    resumed = run_generation(vlm, queries, *args, batch_size, revision, log=log,
                             cache=WriteAheadCache(cache_file), cache_context=context, **batching)  # fmt: skip
    n = len(queries)
    batch_equal = sum(_same(a, b) for a, b in zip(one_by_one, reference))
    resume_equal = sum(_same(a, b) for a, b in zip(resumed, reference))
    return {
        "n_items": n,
        "n_evaluated": n,
        "batch_size": batch_size,
        "batch_invariance": 100 * batch_equal / n,
        "resume_invariance": 100 * resume_equal / n,
        "batch_differences": [q["item"] for q, a, b in zip(queries, one_by_one, reference) if not _same(a, b)],
        "resume_differences": [q["item"] for q, a, b in zip(queries, resumed, reference) if not _same(a, b)],
    }
