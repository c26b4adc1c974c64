"""Probabilistic inference: per-class token log-probabilities under a fixed context
(docs/protocol.md#probabilistic-inference-contexts; scores: docs/protocol.md#probabilistic-inference-scores).

* ``continuation`` (LLaVA): one forward pass of the image + context ("… ASSISTANT: The photo features a"), then
  every class's BOS-stripped token ids are teacher-forced after it. The context's cache is computed once per image;
  each chunk of classes is one pass of their tokens packed into a single row, each class seeing the context and its
  own earlier tokens only (never another class's), so the context's cache is never copied.
* ``per_class`` (BLIP-2): one full pass per class over image + "… Answer: A {label}"; the standalone class ids are
  gathered at the last ``len(ids)`` positions, as upstream does
  (docs/protocol.md#class-name-tokenisation-for-log-likelihood).

Scores are kept per token (float32) so that Sum, Avg and CFG are computed by the cheap scoring rule.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .cache import cache_key
from .datasets import first_indices
from .evaluate import load_rgb
from .models import CHAT_FAMILY, cache_argument
from .progress import Progress
from .prompts import render
from .records import base_record, triage

METHODS = ("continuation", "per_class")


def chat_class_token_ids(tokenizer, context: str, classes: list[str]) -> list[list[int]]:
    """A chat model's class tokens: each name tokenised without special tokens, after a space where the context ends
    in a word ("The photo features a" + " cat"), as is right after the turn marker's newline otherwise."""
    lead = "" if not context or context[-1].isspace() else " "
    return [tokenizer(lead + name, add_special_tokens=False)["input_ids"] for name in classes]


def class_token_ids(tokenizer, classes: list[str]) -> list[list[int]]:
    """Ids of each class name with special tokens added and the first (BOS) id dropped
    (docs/protocol.md#class-name-tokenisation-for-log-likelihood)."""
    out = []
    for name in classes:
        ids = tokenizer(name)["input_ids"]
        if not ids or ids[0] != tokenizer.bos_token_id:
            raise ValueError(f"tokenizer does not start {name!r} with BOS; the upstream recipe drops the first id")
        if len(ids) < 2:
            raise ValueError(f"class name {name!r} tokenises to nothing")
        out.append(ids[1:])
    return out


def packed_class_inputs(class_ids: list[list[int]], prefix_len: int, dtype: torch.dtype):
    """Every class's teacher-forced tokens (all but its last) packed into one row after a prefix of ``prefix_len``.

    Returns ``ids [1, T]``, ``positions [1, T]`` (each class restarts at ``prefix_len``), an additive attention
    mask ``[1, 1, T, prefix_len + T]`` (every token sees the whole prefix and, causally, its own class's earlier
    tokens only) and the packed row of each class's first fed token. Scoring all classes this way attends to the
    one cached prefix: no class gets a copy of it."""
    fed = [ids[:-1] for ids in class_ids]
    starts = np.cumsum([0] + [len(f) for f in fed])
    total = int(starts[-1])
    owner = torch.repeat_interleave(torch.arange(len(fed)), torch.tensor([len(f) for f in fed], dtype=torch.long))
    offset = torch.arange(total) - torch.tensor(starts[:-1], dtype=torch.long)[owner]
    sees = (owner[:, None] == owner[None, :]) & (offset[None, :] <= offset[:, None])
    allowed = torch.cat([torch.ones(total, prefix_len, dtype=torch.bool), sees], dim=1)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    ids = torch.tensor([t for f in fed for t in f], dtype=torch.long)
    return ids[None], (prefix_len + offset)[None], mask[None, None], starts[:-1]


@torch.inference_mode()
def continuation_logprobs(vlm, image, context: str, class_ids: list[list[int]], chunk: int) -> list[np.ndarray]:
    """Token log-probs of every class continuing ``context`` (with ``image``; text only when image is None).

    The context is run once; each chunk of ``chunk`` classes is then one forward pass of their packed tokens over
    the context's cache (see :func:`packed_class_inputs`), which is cropped back to the context afterwards."""
    model = vlm.model
    if image is not None:
        inputs = vlm.encode([image], [context])
    else:
        inputs = vlm.tokenizer([context], return_tensors="pt", **vlm.tokenizer_options).to(vlm.device)
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()
    cache, prefix_len = out.past_key_values, inputs["attention_mask"].shape[1]
    results: list[np.ndarray] = []
    for begin in range(0, len(class_ids), chunk):
        seqs = class_ids[begin : begin + chunk]
        scores = [[float(first[s[0]])] for s in seqs]
        multi = [s for s in seqs if len(s) > 1]
        if multi:
            ids, positions, mask, starts = packed_class_inputs(multi, prefix_len, vlm.dtype)
            logits = model(
                input_ids=ids.to(vlm.device),
                position_ids=positions.to(vlm.device),
                attention_mask=mask.to(vlm.device),
                use_cache=True,
                **cache_argument(model, cache),
            ).logits[0]
            cache.crop(-ids.shape[1])  # back to the context alone for the next chunk
            targets = torch.tensor([t for s in multi for t in s[1:]], device=logits.device)
            picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None])[:, 0].cpu().tolist()
            row = iter(zip(multi, starts))
            for score, s in zip(scores, seqs):
                if len(s) > 1:
                    _, start = next(row)
                    score += picked[start : start + len(s) - 1]
        results.extend(np.asarray(s, dtype=np.float32) for s in scores)
    return results


@torch.inference_mode()
def chat_continuation_logprobs(vlm, image, context: str, class_ids: list[list[int]]) -> list[np.ndarray]:
    """Token log-probs of every class continuing the ``context`` of a chat model with multimodal rotary positions
    (Qwen2.5-VL, Qwen3-VL): the context is run once, then each class is one forward pass of its tokens over the
    context's cache, which is cropped back after it. Such a model places text after an image at positions it derives
    from the image's grid, so classes are fed one by one for it to do so, rather than packed with explicit positions
    as :func:`continuation_logprobs` does for every other model."""
    model = vlm.model
    if image is not None:
        inputs = vlm.encode([image], [context])
    else:  # the chat template already wrote every special token
        inputs = vlm.tokenizer([context], add_special_tokens=False, return_tensors="pt").to(vlm.device)
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()
    cache = out.past_key_values
    results = []
    for ids in class_ids:
        scores = [float(first[ids[0]])]
        if len(ids) > 1:
            fed = torch.tensor([ids[:-1]], device=vlm.device)
            # one unpadded row: no mask, so the model derives the new tokens' positions from its cache
            logits = model(input_ids=fed, use_cache=True, **cache_argument(model, cache)).logits[0]
            cache.crop(-fed.shape[1])  # back to the context (sliding-window layers crop by a count only)
            logp = torch.log_softmax(logits.float(), dim=-1)
            scores += logp.gather(-1, torch.tensor(ids[1:], device=logp.device)[:, None])[:, 0].cpu().tolist()
        results.append(np.asarray(scores, dtype=np.float32))
    return results


@torch.inference_mode()
def upstream_continuation_logprobs(vlm, image, context: str, class_ids: list[list[int]]) -> list[np.ndarray]:
    """The upstream loop (reference for tests and benchmarks): per class, one single-token step at a time from a
    fresh copy of the context's cache."""
    model = vlm.model
    inputs = vlm.encode([image], [context]) if image is not None else vlm.tokenizer([context], return_tensors="pt")
    inputs = inputs.to(vlm.device)
    out = model(**inputs, use_cache=True)
    prefix_len, results = inputs["attention_mask"].shape[1], []
    for ids in class_ids:
        cache, logits, scores = copy.deepcopy(out.past_key_values), out.logits[0, -1], []
        for step, token in enumerate(ids):
            scores.append(float(torch.log_softmax(logits.float(), dim=-1)[token]))
            if step + 1 < len(ids):
                mask = torch.ones(1, prefix_len + step + 1, dtype=torch.long, device=vlm.device)
                token_ids = torch.tensor([[token]], device=vlm.device)
                logits = model(input_ids=token_ids, attention_mask=mask, **cache_argument(model, cache)).logits[0, -1]
        results.append(np.asarray(scores, dtype=np.float32))
    return results


@torch.inference_mode()
def per_class_logprobs(vlm, image, template: str, question: str, classes, class_ids, chunk: int) -> list[np.ndarray]:
    """One pass per class over image + the class-filled prompt; ids gathered at the last len(ids) positions."""
    results: list[np.ndarray] = []
    for start in range(0, len(classes), chunk):
        names, ids = classes[start : start + chunk], class_ids[start : start + chunk]
        prompts = [render(template, question, label=name) for name in names]
        if image is not None:
            inputs = vlm.encode([image] * len(names), prompts)
            logits = vlm.model(**inputs).logits
        else:  # text-only prior: the language model alone, without the image's query tokens
            inputs = vlm.tokenizer(prompts, padding=True, return_tensors="pt").to(vlm.device)
            logits = vlm.model.language_model(**inputs).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for row, target in enumerate(ids):
            positions = logp[row, -len(target) - 1 : -1]  # left padding: every prompt ends at the last position
            results.append(positions.gather(-1, torch.tensor(target, device=logp.device)[:, None])[:, 0].cpu().numpy())
    return results


def run_loglik(
    vlm,
    queries: list[dict],
    classes: list[str],
    template: str,
    method: str,
    question: str,
    chunk: int,
    revision: str,
    text_prior: bool = False,
    log: Callable[[str], None] = print,
    cache=None,
    cache_context: dict | None = None,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Records (one per query) and arrays: ``token_logprobs`` [items, total class tokens], ``class_offsets``,
    ``label_index`` (first index of the label, upstream ``classes.index``), and ``prior`` when requested.

    With a ``WriteAheadCache`` each item's scores are appended to it as soon as they are computed (an item costs
    one pass per class chunk), and items already in it are not scored again."""
    if method not in METHODS:
        raise ValueError(f"loglik method must be one of {METHODS}, got {method!r}")
    chat = vlm.family == CHAT_FAMILY
    context = render(template, question)
    class_ids = (
        chat_class_token_ids(vlm.tokenizer, context, classes) if chat else class_token_ids(vlm.tokenizer, classes)
    )
    offsets = np.cumsum([0] + [len(ids) for ids in class_ids])
    first_index = first_indices(classes)
    token_logprobs = np.full((len(queries), offsets[-1]), np.nan, dtype=np.float32)
    records = [base_record(q, revision) for q in queries]

    def scores_for(image):
        if method == "continuation" and chat:
            text = context if image is not None else render(vlm.prompt_template(template, image=False), question)
            if vlm.multimodal_positions:  # packing's explicit positions would ignore the image's compressed ones
                return chat_continuation_logprobs(vlm, image, text, class_ids)
            return continuation_logprobs(vlm, image, text, class_ids, chunk)
        if method == "continuation":
            return continuation_logprobs(
                vlm, image, context if image is not None else _text_only(context), class_ids, chunk
            )
        if chat:
            raise ValueError(f"model {vlm.name}: family {CHAT_FAMILY} scores classes by continuation only")
        return per_class_logprobs(
            vlm, image, template if image is not None else _text_only(template), question, classes, class_ids, chunk
        )

    # keyed by the item, its image's name and content, and the context
    keys = [
        cache_key(cache_context, classes, q["item"], q["row"], q["image"], q.get("sha256"), context) for q in queries
    ]
    limits = ClassLimits(vlm, method, template, question, context, classes, class_ids)

    def restore(i: int, scores: list) -> None:
        token_logprobs[i] = np.array(scores, dtype=np.float32)
        records[i].update(status="ok", prompt=context)

    todo, cached = triage(queries, records, keys, cache, restore=restore, unfit=lambda i: limits.text_overflow)
    progress = Progress(len(queries), "score classes", log)
    progress.update(len(queries) - len(todo))
    for i in todo:
        image = load_rgb(queries[i]["path"])
        if (fields := limits.overflow(image)) is not None:  # not cached: the limit is checked again on a rerun
            records[i].update(fields)
        else:
            token_logprobs[i] = np.concatenate(scores_for(image))
            if cache is not None:  # written ahead: this item is never scored again
                cache.put(keys[i], token_logprobs[i].tolist())
            records[i].update(status="ok", prompt=context)
        progress.update()
    overflowed = sum(r["status"] == "context_overflow" for r in records)
    log(f"scored {len(queries)} items ({cached} from the cache, {overflowed} past the context)")
    arrays = {
        "token_logprobs": token_logprobs,
        "class_offsets": offsets,
        "label_index": np.array([first_index[q["label"]] for q in queries]),
    }
    if text_prior:  # without the image the sequences are shorter; every class past the context even so leaves NaN
        arrays["prior"] = (
            np.full(offsets[-1], np.nan, dtype=np.float32) if limits.text_overflow else np.concatenate(scores_for(None))
        )
    return records, arrays


class ClassLimits:
    """Whether an item's every class fits the model (docs/protocol.md#precision-batching-and-padding): the
    sequence a class is scored on (``continuation``: the context, image tokens included, then the class's tokens;
    ``per_class``: the prompt filled with the class) must fit the language model's context, and an instruction the
    Q-Former reads (InstructBLIP) its position table. An item any class of which does not fit is
    ``context_overflow``, with the longest class and the token counts as the reason; nothing is truncated."""

    def __init__(self, vlm, method: str, template: str, question: str, context: str, classes, class_ids):
        self.vlm, self.context, self.classes = vlm, context, classes
        self._image_tokens: dict[tuple[int, int], int] = {}
        self.context_text = vlm.prompt_token_lower_bounds([context])[0]  # the image's placeholder counted once
        if method == "per_class":
            filled = [render(template, question, label=name) for name in classes]
            self.needs = vlm.prompt_token_lower_bounds(filled)
            instruction = next(filter(None, vlm.instruction_overflows(filled)), None)
        else:
            self.needs = [self.context_text + len(ids) for ids in class_ids]
            instruction = vlm.instruction_overflows([context])[0]
        self.longest = max(range(len(classes)), key=self.needs.__getitem__)
        self.text_overflow = (
            {"status": "context_overflow", "reason": instruction}
            if instruction
            else self._fields(0) if self.needs[self.longest] > vlm.max_context else None
        )

    def _fields(self, image_tokens: int) -> dict | None:
        need = self.needs[self.longest] + image_tokens
        if need <= self.vlm.max_context:
            return None
        name = self.classes[self.longest]
        shown = name if len(name) <= 60 else f"{name[:57]}..."
        return {
            "status": "context_overflow",
            "reason": f"class {shown!r} needs {need} tokens (context and image included), more than the model's "
            f"context of {self.vlm.max_context}",
        }

    def image_tokens(self, size: tuple[int, int]) -> int:
        """Tokens an image of this size adds to the text (a processor's image tokens depend on the size only):
        counted from the processor once per size, not once per item."""
        if size not in self._image_tokens:
            encoded = self.vlm.input_lengths(self.vlm.preprocess([Image.new("RGB", size)], [self.context]))[0]
            self._image_tokens[size] = encoded - self.context_text
        return self._image_tokens[size]

    def overflow(self, image) -> dict | None:
        """The record fields of an item whose image's tokens push a class past the context, or None."""
        return self._fields(self.image_tokens(image.size))


def _text_only(template: str) -> str:
    """The prompt without its image placeholder (the paper's p(class | prompt))."""
    return template.replace("<image>\n", "").replace("<image>", "")
