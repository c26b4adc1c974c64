"""The per-item sequence every evaluation shares: one record per query, in plan order; a skipped image is recorded
as such, an item already in the write-ahead cache is restored, an item that cannot fit the model is recorded as
not evaluable, and only the rest are computed (and written ahead as each batch finishes, by the caller)."""

from __future__ import annotations

from typing import Any, Callable

RECORD_FIELDS = ("item", "row", "image", "label", "choices")


def base_record(query: dict, revision: str) -> dict:
    return {**{k: query.get(k) for k in RECORD_FIELDS}, "model_revision": revision}


def triage(
    queries: list[dict],
    records: list[dict],
    keys: list | None = None,
    cache=None,
    restore: Callable[[int, Any], None] | None = None,
    unfit: Callable[[int], dict | None] | None = None,
) -> tuple[list[int], int]:
    """Sort the queries into what is done and what is left: returns (positions to compute, number restored).

    ``cache`` (a write-ahead cache keyed by ``keys``) restores an item through ``restore(i, value)`` (by default its
    stored fields update the record); ``unfit(i)``, if given, returns the fields of an item that cannot be
    evaluated (a prompt longer than the context), or None."""
    todo, restored = [], 0
    for i, query in enumerate(queries):
        if "skip" in query:
            records[i].update(status="skipped_image", reason=query["skip"])
        elif cache is not None and keys[i] in cache:
            value = cache.get(keys[i])
            restore(i, value) if restore else records[i].update(value)
            restored += 1
        elif unfit is not None and (fields := unfit(i)) is not None:
            records[i].update(fields)
        else:
            todo.append(i)
    return todo, restored


def shard_meta(
    run: dict, settings: dict, revision: str, shard: tuple[int, int], part: slice, seconds: float, **extra
) -> dict:
    """The meta file of a shard job: its params, the model's settings and revision, and which items it ran."""
    index, count = shard
    return {
        **run,
        **settings,
        "model_revision": revision,
        **extra,
        "shard": f"{index}-of-{count}",
        "items": [part.start, part.stop],
        "seconds": round(seconds, 2),
    }
