"""Evaluation loops: VLM generation over a query plan, and CLIP zero-shot classification.

Each returns one record per query, in plan order, with a ``status``: ``ok``, ``skipped_image`` (the image was
missing or undecodable and the config skips such rows) or ``context_overflow`` (the prompt plus its answer cannot
fit the model's context: recorded as N/A, never truncated).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from PIL import Image

from .cache import cache_key
from .datasets import first_indices, to_rgb
from .progress import Progress
from .records import base_record, triage
from .prompts import extract_answer, render


def load_rgb(path: str) -> Image.Image:
    with Image.open(path) as img:
        return to_rgb(img, path)


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


def generation_batches(todo: list[int], keys: list, batch_size: int, sort_block: int) -> list[list[int]]:
    """Batches of the items in ``todo`` (positions): the items of each block of ``sort_block`` consecutive positions,
    sorted by ``keys`` (prompt length, image size) so that a batch pads little, cut into ``batch_size`` batches.
    Blocks, not shards, decide a batch's members: outputs are the same for any shard count."""
    blocks: dict[int, list[int]] = {}
    for i in todo:
        blocks.setdefault(i // sort_block, []).append(i)
    batches = []
    for members in blocks.values():
        members.sort(key=lambda i: (keys[i], i))
        batches.extend(members[k : k + batch_size] for k in range(0, len(members), batch_size))
    return batches


def _prefetched(batches: list, prepare: Callable, workers: int):
    """(batch, prepare(batch)) in order, with up to ``workers`` batches prepared ahead in threads (image decoding
    and preprocessing overlap the model's forward passes; PIL and torch release the GIL)."""
    if workers <= 0:
        yield from ((b, prepare(b)) for b in batches)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = deque((b, pool.submit(prepare, b)) for b in batches[: workers + 1])
        upcoming = iter(batches[workers + 1 :])
        while pending:
            batch, future = pending.popleft()
            following = next(upcoming, None)
            if following is not None:
                pending.append((following, pool.submit(prepare, following)))
            yield batch, future.result()


def image_size(path: str) -> tuple[int, int]:
    """Width and height from the file header (the pixels are not decoded)."""
    with Image.open(path) as img:
        return img.size


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
    sort_block: int | None = None,
    loader_workers: int = 0,
    answer_from: str = "last_marker",
    min_new_tokens: int = 0,
    reasoning_tags: list[str] | None = None,
) -> list[dict]:
    """Generate in batches of ``batch_size`` queries, skipping items that cannot be evaluated. Each record keeps
    the decoded ``output`` (prompt + generation), the ``generation`` alone and the ``pred`` that is scored
    (:func:`prediction`).

    Without ``sort_block`` (or with ``sort_block == batch_size``) batches are fixed blocks of queries by position,
    as upstream runs them. With a larger ``sort_block``, the items of each block are sorted by prompt length and
    image size before batching (less padding), and results are returned in plan order. ``loader_workers`` threads
    decode and preprocess upcoming batches while the current one generates.

    With a ``WriteAheadCache``, each finished batch is appended to it before the next starts and items already in
    it are not recomputed: a killed job's rerun loses at most the batch in flight. Keys combine ``cache_context``
    (model, revision, settings, protocol) with the item, its image's content hash and its rendered prompt."""
    if not queries:  # a shard beyond the last batch
        log("no items in this shard")
        return []
    sort_block = sort_block or batch_size
    prompts = [render(template, q["question"]) for q in queries]
    # the side actually padded, per row: with right padding an answer depends on its batch-mates
    records = [{**base_record(q, revision), "prompt": p, "padding_side": vlm.padding_side} for q, p in zip(queries, prompts)]
    keys = [
        cache_key(cache_context, q["item"], q["row"], q["image"], q.get("sha256"), p) for q, p in zip(queries, prompts)
    ]
    budget = vlm.max_context - max_new_tokens
    lower_bounds = vlm.prompt_token_lower_bounds(prompts)
    unreadable = vlm.instruction_overflows(prompts)

    def overflows(i: int) -> dict | None:
        if lower_bounds[i] > budget:
            return {"status": "context_overflow", "reason": _overflow_reason(lower_bounds[i], max_new_tokens, vlm)}
        if unreadable[i]:
            return {"status": "context_overflow", "reason": unreadable[i]}
        return None

    todo, cached = triage(queries, records, keys, cache, unfit=overflows)
    log(f"{len(todo)} of {len(queries)} items to generate ({cached} from the cache, "
        f"{len(queries) - len(todo) - cached} not evaluable)")
    sort_keys = [0] * len(queries)
    if sort_block > batch_size:
        for i in todo:
            sort_keys[i] = (lower_bounds[i], image_size(queries[i]["path"]))
    batches = generation_batches(todo, sort_keys, batch_size, sort_block)

    def prepare(batch: list[int]):
        """Inputs of the batch's items that fit the context (CPU tensors), and the overflow of the others."""
        images = [load_rgb(queries[i]["path"]) for i in batch]
        inputs = vlm.preprocess(images, [prompts[i] for i in batch])
        lengths = vlm.input_lengths(inputs)
        overflow = {batch[k]: n for k, n in enumerate(lengths) if n > budget}
        if overflow:
            kept = [k for k, i in enumerate(batch) if i not in overflow]
            inputs = vlm.preprocess([images[k] for k in kept], [prompts[batch[k]] for k in kept]) if kept else None
        return inputs, overflow

    progress = Progress(len(todo), "generate", log)
    for batch, (inputs, overflow) in _prefetched(batches, prepare, loader_workers):
        for i, n in overflow.items():
            records[i].update(status="context_overflow", reason=_overflow_reason(n, max_new_tokens, vlm))
        fits = [i for i in batch if i not in overflow]
        if fits:
            for i, (text, new_text) in zip(fits, vlm.generate(vlm.to_device(inputs), max_new_tokens, min_new_tokens)):
                pred = without_reasoning(prediction(text, new_text, answer_marker, answer_from), reasoning_tags)
                records[i].update(status="ok", output=text, generation=new_text, pred=pred)
        if cache is not None:  # written ahead: this batch is never computed again
            cache.put_many({keys[i]: _computed(records[i]) for i in batch})
        progress.update(len(batch))
    return records


COMPUTED_FIELDS = ("status", "reason", "output", "generation", "pred")
ANSWER_SOURCES = ("last_marker", "generation")


def without_reasoning(text: str, tags: list[str] | None) -> str:
    """The text with its reasoning block (``tags`` = [open, close], e.g. ``<think>``...``</think>``) cut out; an
    unclosed block (the token budget ran out while reasoning) leaves no answer."""
    if not tags:
        return text
    opening, closing = tags
    while opening in text:
        before, _, rest = text.partition(opening)
        if closing not in rest:
            return before.strip()
        text = before + rest.partition(closing)[2]
    return text.strip()


def prediction(text: str, new_text: str, answer_marker: str, answer_from: str) -> str:
    """The text that is scored, as upstream took it (docs/protocol.md#answer-extraction):

    * ``last_marker``: upstream's zero-shot scripts decode prompt + generation and keep what follows the last
      answer marker, so a generation that writes the marker again (a second turn) is scored on what follows it;
    * ``generation``: the LLaVA code base's ``model_vqa`` (the fine-tuned models) returns the generated tokens alone,
      and they are scored whole, markers, second turns and role tags included.
    """
    if answer_from == "last_marker":
        return extract_answer(text, answer_marker)
    if answer_from == "generation":
        return new_text.strip()
    raise ValueError(f"answer_from must be one of {ANSWER_SOURCES}, got {answer_from!r}")


def _computed(record: dict) -> dict:
    return {k: record[k] for k in COMPUTED_FIELDS if k in record}


def _overflow_reason(n_tokens: int, max_new_tokens: int, vlm) -> str:
    return (
        f"prompt needs {n_tokens} tokens + {max_new_tokens} new tokens, more than the model's context of "
        f"{vlm.max_context}"
    )


class _PreprocessedImages:
    """Map-style dataset of preprocessed pixels, for a DataLoader whose workers decode JPEGs in parallel."""

    def __init__(self, paths: list[str], preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int):
        return self.preprocess(load_rgb(self.paths[k]))


def loader_batch(batch_size: int, most: int = 32) -> int:
    """The largest divisor of ``batch_size`` up to ``most``: loader batches that join exactly into model batches."""
    return next(d for d in range(min(batch_size, most), 0, -1) if batch_size % d == 0)


def _joined(loader, size: int):
    """The loader's small batches, concatenated into batches of ``size`` (the last may be smaller)."""
    import torch

    parts, held = [], 0
    for part in loader:
        parts.append(part)
        held += len(part)
        if held >= size:
            yield torch.cat(parts)
            parts, held = [], 0
    if parts:
        yield torch.cat(parts)


def run_clip_zero_shot(
    clip,
    queries: list[dict],
    classes: list[str],
    text_template: str,
    batch_size: int,
    revision: str,
    log: Callable[[str], None] = print,
    loader_workers: int = 0,
) -> list[dict]:
    """Argmax over every class-list entry (duplicates included), or over a query's candidates
    (docs/protocol.md#clip-argmax). ``loader_workers`` processes decode and preprocess images ahead of the model."""
    import torch

    if "{label}" not in text_template:
        raise ValueError(f"CLIP text template {text_template!r} has no {{label}} slot")
    text_features = clip.encode_texts([render(text_template, label=c) for c in classes])
    first_index = first_indices(classes)
    records = [base_record(q, revision) for q in queries]
    todo, _ = triage(queries, records)
    loader = torch.utils.data.DataLoader(
        _PreprocessedImages([queries[i]["path"] for i in todo], clip.uint8_pixels),
        # small loader batches: every worker starts decoding at once and the first model batch is ready early;
        # they are joined into model batches of batch_size, so the model sees the same batches (same numbers)
        batch_size=loader_batch(batch_size),
        num_workers=loader_workers,
        pin_memory=clip.device.startswith("cuda"),
    )
    progress = Progress(len(todo), "classify", log)
    for batch, pixels in zip(chunks(todo, batch_size), _joined(loader, batch_size)):
        similarities = clip.encode_images(pixels) @ text_features.T
        predicted = similarities.argmax(dim=1).tolist()
        for row, i, top in zip(similarities, batch, predicted):
            choices = queries[i]["choices"]
            if choices is None:
                pred = classes[top]
            else:
                indices = [first_index[c] for c in choices]
                pred = classes[indices[int(row[indices].argmax())]]
            records[i].update(status="ok", pred=pred)
        progress.update(len(batch))
    log(f"classified {len(todo)} of {len(queries)} items")
    return records
