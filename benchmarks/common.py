"""Shared pieces of the throughput benchmarks: models of the real architectures with random weights (``tiny``
on a CPU for ratios, ``full`` on a GPU: LLaVA-1.5-7B and CLIP ViT-L/14-336 built from their real configs), JPEG
inputs, timing and the printed table."""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SCRIPT_START = time.perf_counter()  # imported first thing by every benchmark script

# Sustained dense bf16/fp16 matmul rate (TFLOP/s) of a card, the denominator of MFU. H100/H200: the rate measured
# beside the upstream-style baselines of benchmarks/RESULTS.md (a floor of 790 TFLOP/s); others: 80 % of datasheet.
PEAK_TFLOPS = {"H200": 790.0, "H100": 790.0, "A100": 250.0, "L40S": 290.0, "A6000": 124.0, "4090": 132.0}


def arguments(description: str, **extra) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny",
                        help="tiny: the demo's tiny models (CPU, ratios only); full: real architectures (GPU)")  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--items", type=int, default=None, help="images to time (default per size)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="MFU denominator (default by card)")
    parser.add_argument("--work", default=None, help="folder for the generated inputs (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the table rows here")
    for name, kwargs in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.size == "full" and not args.device.startswith("cuda"):
        parser.error("--size full needs a GPU (the 7B model in bf16 on a CPU takes hours)")
    return args


def work_dir(args) -> Path:
    import tempfile

    folder = Path(args.work or tempfile.mkdtemp(prefix="vlmrepro-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def card_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    name = card_name(args.device)
    return next((rate for key, rate in PEAK_TFLOPS.items() if key in name), None)


def write_jpegs(folder: Path, n: int, size=(500, 375), seed: int = 0) -> list[str]:
    """ImageNet-like JPEGs (quality 90) with smooth random content, so that decoding costs what it costs there."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            small = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize(size, Image.BILINEAR).save(path, quality=90)
        paths.append(str(path))
    return paths


def llava_dir(folder: Path, size: str) -> Path:
    """A LLaVA-1.5 model directory (config + processor) of the requested size; weights are random.

    ``tiny`` is the demo's tiny model with its weights saved; ``full`` holds only the config and processor of the
    7B architecture (the weights are initialised on the GPU by :func:`attach_random_weights`)."""
    import transformers as tf

    from vlmrepro.demo.tiny import build_tiny, llama_tokenizer

    out = folder / f"llava-{size}"
    if (out / "config.json").exists():
        return out
    if size == "tiny":
        build_tiny("llava", out, {"max_context": 1024})
        return out
    tok = llama_tokenizer()
    processor = tf.LlavaProcessor(
        image_processor=tf.CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = tf.LlavaConfig(  # llava-hf/llava-1.5-7b-hf
        vision_config=tf.CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
            patch_size=14, projection_dim=768, hidden_act="quick_gelu",
        ),
        text_config=tf.LlamaConfig(
            vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=576,
        projector_hidden_act="gelu",
    )  # fmt: skip
    out.mkdir(parents=True)
    config.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def attach_random_weights(vlm, seed: int = 0) -> None:
    """Random weights of the directory's architecture, created on the model's device in its dtype (a 7B
    checkpoint is never written to disk)."""
    from transformers import AutoConfig

    from vlmrepro.models import model_class

    if (Path(vlm.model_dir) / "model.safetensors").exists():
        return  # tiny: saved weights, loaded by the ordinary path
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(vlm.dtype)
    try:
        with torch.device(vlm.device):
            model = model_class(vlm.family)._from_config(
                AutoConfig.from_pretrained(vlm.model_dir), attn_implementation=vlm.attention
            )
    finally:
        torch.set_default_dtype(default)
    model.generation_config.pad_token_id = vlm.tokenizer.pad_token_id
    vlm._model = model.eval()


def llava_flop_per_image(vlm, prompt_tokens: int, new_tokens: int) -> float:
    """2 x parameters x positions for the language model, and for the vision tower over its patches."""
    model = vlm.model
    lm = sum(p.numel() for p in model.model.language_model.parameters())
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    patches = model.config.image_seq_length + 1
    return 2 * lm * (prompt_tokens + new_tokens) + 2 * vision * patches


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float:
    """Peak GPU memory allocated since the last reset, or the process's peak resident memory on a CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(fn, device: str):
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start, peak_memory_gib(device)


class Table:
    """A benchmark's table, printed and saved row by row as each row is timed: a run its time limit kills keeps
    every row it finished, on stdout and in ``--json``. The ratio is against the first row (the upstream-style
    path); ``elapsed s`` counts from the script's start (imports and model building included)."""

    def __init__(self, title: str, args, unit: str):
        self.title, self.args, self.unit, self.rows = title, args, unit, []
        memory = "peak GPU GiB" if args.device.startswith("cuda") else "peak RSS GiB"
        print(f"\n## {title}\ncard: {card_name(args.device)} · size: {args.size} · {time.strftime('%Y-%m-%d')}")
        print(f"| path | {unit} | ratio | MFU | {memory} | elapsed s | notes |\n|---|---|---|---|---|---|---|", flush=True)
        self._save()

    def add(self, row: dict) -> None:
        row = {"unit": self.unit, **row, "elapsed_s": round(time.perf_counter() - SCRIPT_START, 1)}
        self.rows.append(row)
        mfu = f"{100 * row['mfu']:.0f} %" if row.get("mfu") is not None else "n/a"
        ratio = row["rate"] / self.rows[0]["rate"]
        print(f"| {row['name']} | {row['rate']:.3g} | {ratio:.1f}x | {mfu} | {row['memory']:.1f} | "
              f"{row['elapsed_s']:.0f} | {row.get('notes', '')} |", flush=True)  # fmt: skip
        self._save()

    def _save(self) -> None:
        if not self.args.json:
            return
        table = {"title": self.title, "card": card_name(self.args.device), "size": self.args.size, "rows": self.rows}
        partial = f"{self.args.json}.part"
        with open(partial, "w") as handle:
            json.dump(table, handle)
        os.replace(partial, self.args.json)  # a kill never leaves half a file
