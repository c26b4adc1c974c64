"""The ImageNet + LLaVA-1.5 instruction mix of paper §4.3 (docs/protocol.md#imagenet-plus-llava-instruction-mix).

Upstream concatenates the ImageNet classification conversations (the projector fine-tune's training file) with
``llava_v1_5_mix665k.json``, ImageNet first, and shuffles the whole list with ``random.seed(1234)``; its filtering
step was not released, so records whose image file is missing are dropped here and counted (text-only records
have no image and are kept).

A training example is ``{"path": image or None, "sha256": the image's content hash where the split recorded it,
"segments": [[prompt, answer], ...]}``: one segment per assistant turn, rendered with LLaVA's Vicuna v1 template
(``--version v1``): the system prompt, then ``USER: {human} ASSISTANT: {gpt}</s>`` per turn; the loss covers each
answer and its ``</s>``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from .datasets import ManifestError


def conversation_segments(conversations: list[dict], system: str, where: str = "") -> list[list[str]]:
    """[[prompt, answer], ...] of one LLaVA-format conversation (human/gpt turns alternating, human first)."""
    if len(conversations) % 2 or not conversations:
        raise ManifestError(f"{where}: a conversation needs human/gpt pairs, got {len(conversations)} turns")
    segments = []
    for i in range(0, len(conversations), 2):
        human, gpt = conversations[i], conversations[i + 1]
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            raise ManifestError(f"{where}: turn {i} must be human then gpt, got {human.get('from')}/{gpt.get('from')}")
        head = f"{system} " if i == 0 else ""
        segments.append([f"{head}USER: {human['value']} ASSISTANT:", gpt["value"]])
    return segments


def image_of(query: dict) -> dict:
    """A training example's image: its path, and its content hash where the split recorded one (the model's identity
    covers the images' contents, not their names)."""
    return {"path": query["path"], **({"sha256": query["sha256"]} if "sha256" in query else {})}


def _image_path(image: str, roots: dict[str, str], where: str) -> str:
    source, _, rest = image.partition("/")
    if source not in roots:
        raise ManifestError(
            f"{where}: image {image!r} comes from {source!r}, which has no entry in the recipe's mix.image_roots "
            f"(configured: {sorted(roots)})"
        )
    return os.path.join(roots[source], rest)


def build_mix(
    classification: list[dict],
    corpus: list[dict],
    image_roots: dict[str, str],
    classification_prompt: str,
    system: str,
    seed: int,
    classification_copies: int = 1,
) -> tuple[list[dict], dict]:
    """(training examples in training order, report). ``classification``: the planned training queries (path,
    label) in their seeded order, each entering the mix ``classification_copies`` times; ``corpus``: the
    LLaVA-format records."""
    examples = [
        {**image_of(q), "segments": [[classification_prompt, q["label"]]]}
        for _ in range(classification_copies)
        for q in classification
    ]
    for n, record in enumerate(corpus):
        where = f"instruction corpus record {n} (id {record.get('id', '?')})"
        path = _image_path(record["image"], image_roots, where) if "image" in record else None
        if path is None and any("<image>" in turn["value"] for turn in record["conversations"]):
            raise ManifestError(f"{where}: has an <image> placeholder but no image")
        examples.append({"path": path, "segments": conversation_segments(record["conversations"], system, where)})
    random.Random(seed).shuffle(examples)
    kept = [e for e in examples if e["path"] is None or Path(e["path"]).is_file()]
    dropped = [e["path"] for e in examples if e["path"] is not None and not Path(e["path"]).is_file()]
    report = {
        "n_classification": len(classification),
        "classification_copies": classification_copies,
        "n_corpus": len(corpus),
        "n_text_only": sum(e["path"] is None for e in kept),
        "n_dropped_missing_image": len(dropped),
        "dropped_examples": dropped[:20],
        "n_examples": len(kept),
    }
    return kept, report
