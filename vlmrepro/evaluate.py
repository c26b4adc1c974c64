"""Evaluation loops: VLM generation over a query plan, and CLIP zero-shot classification.

Each returns one record per query, in plan order, with a ``status``: ``ok``, ``skipped_image`` (the image was
missing or undecodable and the config skips such rows) or ``context_overflow`` (the prompt plus its answer cannot
fit the model's context: recorded as N/A, never truncated).
"""

from __future__ import annotations

import time
from typing import Callable

from PIL import Image

from .cache import cache_key
from .datasets import first_indices
from .prompts import extract_answer, render


def base_record(query: dict, revision: str) -> dict:
    keys = ("item", "row", "image", "label", "choices")
    return {**{k: query.get(k) for k in keys}, "model_revision": revision}


def load_rgb(path: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def chunks(seq: list, size: int):
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def shard_slice(n_items: int, batch_size: int, index: int, count: int) -> slice:
    """Items of shard ``index`` of ``count``: whole batches (blocks of ``batch_size`` items by position), so every
    batch is the same whatever the shard count and the gathered outputs are byte-identical."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index} of {count} does not exist")
    blocks = -(-n_items // batch_size)
    start, stop = blocks * index // count, blocks * (index + 1) // count
    return slice(start * batch_size, min(stop * batch_size, n_items))


def run_generation(
    vlm,
    queries: list[dict],
    template: str,
    answer_marker: str,
    max_new_tokens: int,
    batch_size: int,
    revision: str,
    log: Callable[[str], None] = print,
    cache=None,
    cache_context: dict | None = None,
) -> list[dict]:
    """Generate in fixed blocks of ``batch_size`` queries (by position), skipping items that cannot be evaluated.

    With a ``WriteAheadCache``, each finished batch is appended to it before the next starts and items already in
    it are not recomputed: a killed job's rerun loses at most the batch in flight. Keys combine ``cache_context``
    (model, revision, settings, protocol) with the item and its rendered prompt."""
    if not queries:  # a shard beyond the last batch
        log("no items in this shard")
        return []
    prompts = [render(template, q["question"]) for q in queries]
    records = [{**base_record(q, revision), "prompt": p} for q, p in zip(queries, prompts)]
    keys = [cache_key(cache_context, q["item"], q["row"], q["image"], p) for q, p in zip(queries, prompts)]
    budget = vlm.max_context - max_new_tokens
    todo, cached = set(), 0
    for i, (query, lower_bound) in enumerate(zip(queries, vlm.prompt_token_lower_bounds(prompts))):
        if "skip" in query:
            records[i].update(status="skipped_image", reason=query["skip"])
        elif cache is not None and keys[i] in cache:
            records[i].update(cache.get(keys[i]))
            cached += 1
        elif lower_bound > budget:
            records[i].update(status="context_overflow", reason=_overflow_reason(lower_bound, max_new_tokens, vlm))
        else:
            todo.add(i)
    log(f"{len(todo)} of {len(queries)} items to generate ({cached} from the cache, "
        f"{len(queries) - len(todo) - cached} not evaluable)")
    start, done = time.time(), 0
    for block in chunks(range(len(queries)), batch_size):
        batch = [i for i in block if i in todo]
        if not batch:
            continue
        images = [load_rgb(queries[i]["path"]) for i in batch]
        inputs = vlm.encode(images, [prompts[i] for i in batch])
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        fits = [k for k, n in enumerate(lengths) if n <= budget]
        for k, n in enumerate(lengths):
            if n > budget:
                records[batch[k]].update(status="context_overflow", reason=_overflow_reason(n, max_new_tokens, vlm))
        finished = list(batch)
        if len(fits) < len(batch):
            batch, images = [batch[k] for k in fits], [images[k] for k in fits]
            inputs = vlm.encode(images, [prompts[i] for i in batch]) if batch else None
        if batch:
            for i, text in zip(batch, vlm.generate(inputs, max_new_tokens)):
                records[i].update(status="ok", output=text, pred=extract_answer(text, answer_marker))
        if cache is not None:  # written ahead: this batch is never computed again
            cache.put_many({keys[i]: _computed(records[i]) for i in finished})
        done += len(finished)
        log(f"generated {done}/{len(todo)} ({done / max(time.time() - start, 1e-9):.2f} items/s)")
    return records


COMPUTED_FIELDS = ("status", "reason", "output", "pred")


def _computed(record: dict) -> dict:
    return {k: record[k] for k in COMPUTED_FIELDS if k in record}


def _overflow_reason(n_tokens: int, max_new_tokens: int, vlm) -> str:
    return (
        f"prompt needs {n_tokens} tokens + {max_new_tokens} new tokens, more than the model's context of "
        f"{vlm.max_context}"
    )


def run_clip_zero_shot(
    clip,
    queries: list[dict],
    classes: list[str],
    text_template: str,
    batch_size: int,
    revision: str,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Argmax over every class-list entry (duplicates included), or over a query's candidates (PROTOCOL §6.4)."""
    import torch

    if "{label}" not in text_template:
        raise ValueError(f"CLIP text template {text_template!r} has no {{label}} slot")
    text_features = clip.encode_texts([text_template.replace("{label}", c) for c in classes])
    first_index = first_indices(classes)
    records = [base_record(q, revision) for q in queries]
    todo = []
    for i, query in enumerate(queries):
        if "skip" in query:
            records[i].update(status="skipped_image", reason=query["skip"])
        else:
            todo.append(i)
    for batch in chunks(todo, batch_size):
        pixels = torch.stack([clip.preprocess(load_rgb(queries[i]["path"])) for i in batch])
        similarities = clip.encode_images(pixels) @ text_features.T
        for row, i in zip(similarities, batch):
            choices = queries[i]["choices"]
            if choices is None:
                pred = classes[int(row.argmax())]
            else:
                indices = [first_index[c] for c in choices]
                pred = classes[indices[int(row[indices].argmax())]]
            records[i].update(status="ok", pred=pred)
    log(f"classified {len(todo)} of {len(queries)} items")
    return records
