"""Feature extraction (Tables 3 and 10; docs/protocol.md#feature-extraction-prompts-and-probe-positions):
last-layer hidden states of a VLM's language model under the classification prompt, and CLIP image embeddings.
Stored as float16 shards with the item ids they belong to.

VLM positions: ``last`` (the final token, the ':' of 'ASSISTANT:' / 'Answer:'), ``avg`` (mean over every position:
BOS, image or query tokens and text, as upstream), or an integer index into the unpadded sequence (Table 10);
an index beyond a sequence is stored as NaN (reported as missing, never clamped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .cache import ArrayLog, cache_key
from .datasets import first_indices
from .evaluate import chunks, load_rgb
from .io import atomic_path, write_json
from .progress import Progress


def _select(hidden: torch.Tensor, mask: torch.Tensor, positions: list) -> torch.Tensor:
    """[P, D] features of one sequence: the unpadded states picked by ``positions``."""
    states = hidden[mask.bool()].float()
    picked = []
    for pos in positions:
        if pos == "last":
            picked.append(states[-1])
        elif pos == "avg":
            picked.append(states.mean(dim=0))
        elif -len(states) <= int(pos) < len(states):
            picked.append(states[int(pos)])
        else:
            picked.append(torch.full_like(states[0], float("nan")))
    return torch.stack(picked)


def overflow_reasons(vlm, prompt: str, lengths: list[int]) -> list[str | None]:
    """Per sequence, why the model cannot read it (the prompt and image tokens past the language model's context,
    or an instruction past the Q-Former's positions), or None: such an item is ``context_overflow``, never
    truncated."""
    instruction = vlm.instruction_overflows([prompt])[0]
    return [
        instruction
        or (f"prompt needs {n} tokens, more than the model's context of {vlm.max_context}" if n > vlm.max_context else None)
        for n in lengths
    ]


@torch.inference_mode()
def vlm_features(vlm, images, prompt: str, positions: list) -> tuple[np.ndarray, list[int], list[str | None]]:
    """Features [B, P, D] (NaN for an item past the context), sequence lengths, and each item's overflow reason."""
    inputs = vlm.preprocess(images, [prompt] * len(images))
    lengths = vlm.input_lengths(inputs)
    reasons = overflow_reasons(vlm, prompt, lengths)
    fits = [k for k, reason in enumerate(reasons) if reason is None]
    feats = np.full((len(images), len(positions), vlm.model.config.get_text_config().hidden_size), np.nan, np.float32)
    if fits:
        if len(fits) < len(images):
            inputs = vlm.preprocess([images[k] for k in fits], [prompt] * len(fits))
        inputs = vlm.to_device(inputs)
        out = vlm.model(**inputs, output_hidden_states=True)
        lm = getattr(out, "language_model_outputs", None)  # BLIP-2 / InstructBLIP keep the LM's outputs apart
        hidden = (lm.hidden_states if lm is not None else out.hidden_states)[-1]
        feats[fits] = torch.stack([_select(h, m, positions) for h, m in zip(hidden, inputs["attention_mask"])]).cpu().numpy()
    return feats, lengths, reasons


@torch.inference_mode()
def clip_features(clip, images) -> np.ndarray:
    pixels = torch.stack([clip.uint8_pixels(img) for img in images])
    return clip.encode_images(pixels)[:, None, :].cpu().numpy()  # already L2-normalised; one "position"


NPZ_FIELDS = ("features", "item", "row", "split", "class_index", "label_idx")


def feature_files(n_items: int, shard_size: int, index: int = 0, count: int = 1) -> range:
    """The feature files (``shard_size`` items each) that job ``index`` of ``count`` writes."""
    files = -(-n_items // shard_size)
    return range(files * index // count, files * (index + 1) // count)


def _save_npz(path: Path, arrays: dict) -> None:
    """An .npz whose bytes depend only on the arrays (fixed zip timestamps), written atomically."""
    import io
    import zipfile

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name in NPZ_FIELDS:
            buffer = io.BytesIO()
            np.save(buffer, arrays[name], allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def extract(
    encode: Callable[[list], tuple[np.ndarray, list[int] | None, list[str | None] | None]],
    queries: list[dict],
    classes: list[str],
    positions: list,
    out_dir,
    batch_size: int,
    shard_size: int,
    log: Callable[[str], None] = print,
    job: tuple[int, int] = (0, 1),
    cache_dir=None,
    cache_context: dict | None = None,
) -> dict:
    """Run ``encode`` over the queries (skipped images are left out) and write this job's ``shard-XXXXX.npz``
    files (of ``shard_size`` items, numbered over the whole run) plus ``index.json`` into ``out_dir``. Labels are
    upstream's ``classes.index(label)`` and ImageNet's ``label_idx``. ``encode`` returns features, sequence lengths
    and overflow reasons (None where not applicable); items past the context are listed in the index
    (``context_overflow``) and their features are NaN.

    With ``cache_dir``, every finished batch is appended to a write-ahead log first, so a killed job's rerun
    encodes only the batch in flight (logs are keyed by ``cache_context``, the file and its images' contents)."""
    first_index = first_indices(classes)
    todo = [q for q in queries if "skip" not in q]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards, seq_lengths, overflow = [], [], []
    files = list(feature_files(len(todo), shard_size, *job))
    progress = Progress(sum(len(todo[s * shard_size : (s + 1) * shard_size]) for s in files), "extract", log)
    for s in files:
        shard = todo[s * shard_size : (s + 1) * shard_size]
        done: list[dict] = []
        wal = None
        if cache_dir is not None:
            key = cache_key(cache_context, s, shard_size, [q.get("sha256") for q in shard])  # the images' contents
            wal = ArrayLog(Path(cache_dir) / f"{key}.bin", ("item", "features", "length", "overflow"))
            done = wal.read()
        n_done = sum(len(b["item"]) for b in done)
        if [int(i) for b in done for i in b["item"]] != [q["item"] for q in shard[:n_done]]:
            raise RuntimeError(f"{wal.path}: cached items do not match the planned order; delete it to recompute")
        if n_done:
            log(f"shard {s}: {n_done} items from the cache")
            progress.update(n_done)
        for batch in chunks(shard[n_done:], batch_size):
            f, n, reasons = encode([load_rgb(q["path"]) for q in batch])
            record = {
                "item": np.array([q["item"] for q in batch]),
                "features": f.astype(np.float16),
                "length": np.array(n if n else [-1] * len(batch)),
                "overflow": np.array([r or "" for r in reasons or [None] * len(batch)], dtype=str),
            }
            if wal is not None:
                wal.append(record)
            done.append(record)
            progress.update(len(batch))
        name = f"shard-{s:05d}.npz"
        _save_npz(
            out_dir / name,
            {
                "features": np.concatenate([b["features"] for b in done]),
                "item": np.array([q["item"] for q in shard]),
                "row": np.array([q["row"] for q in shard]),
                "split": np.array([q.get("split", "") for q in shard]),
                "class_index": np.array([first_index[q["label"]] for q in shard]),
                "label_idx": np.array([q.get("label_idx", -1) for q in shard]),
            },
        )
        shards.append({"file": name, "n_items": len(shard)})
        splits = {q["item"]: q.get("split", "") for q in shard}
        overflow.extend(
            {"item": int(i), "split": splits[int(i)], "reason": str(r)}
            for b in done
            for i, r in zip(b["item"], b["overflow"])
            if r
        )
        seq_lengths.extend(int(n) for b in done for n in b["length"] if n >= 0)
        log(f"shard {s}: {len(shard)} items")
    index = {
        "positions": [str(p) for p in positions],
        "n_items": sum(sh["n_items"] for sh in shards),
        "n_skipped": len(queries) - len(todo) if job[0] == 0 else 0,
        "shards": shards,
        "sequence_length": {"min": min(seq_lengths), "max": max(seq_lengths)} if seq_lengths else None,
        "context_overflow": overflow,
    }
    write_json(out_dir / "index.json", index)
    return index


def merge_indexes(parts: list[dict]) -> dict:
    """The index of a features directory gathered from the jobs' parts (in job order)."""
    lengths = [p["sequence_length"] for p in parts if p["sequence_length"]]
    return {
        "positions": parts[0]["positions"],
        "n_items": sum(p["n_items"] for p in parts),
        "n_skipped": sum(p["n_skipped"] for p in parts),
        "shards": [sh for p in parts for sh in p["shards"]],
        "sequence_length": (
            {"min": min(l["min"] for l in lengths), "max": max(l["max"] for l in lengths)} if lengths else None
        ),
        "context_overflow": [o for p in parts for o in p["context_overflow"]],
    }


def load(features_dir, position: str) -> dict[str, np.ndarray]:
    """Concatenate the shards for one position: features [N, D] float32 plus item, row, split and labels. Items
    past the model's context are left out; ``context_overflow_split`` holds their splits (for the cell's note)."""
    index = json.loads((Path(features_dir) / "index.json").read_text())
    if position not in index["positions"]:
        raise ValueError(f"{features_dir} has positions {index['positions']}, not {position!r}")
    p = index["positions"].index(position)
    parts: dict[str, list] = {}
    for shard in index["shards"]:
        with np.load(Path(features_dir) / shard["file"]) as npz:
            for key in ("item", "row", "split", "class_index", "label_idx"):
                parts.setdefault(key, []).append(npz[key])
            parts.setdefault("features", []).append(npz["features"][:, p].astype(np.float32))
    data = {key: np.concatenate(values) for key, values in parts.items()}
    overflowed = {o["item"] for o in index["context_overflow"]}
    keep = ~np.isin(data["item"], list(overflowed))
    data = {key: values[keep] for key, values in data.items()}
    data["context_overflow_split"] = np.array([o["split"] for o in index["context_overflow"]], dtype=str)
    return data
