"""Tiny random-weight chat VLMs of current architectures (family ``chat``), built offline from their real
transformers config classes, with a working processor and a chat template shaped like the published one: the test
suite and the demo run every evaluation on them through the same code path as the hub checkpoints.

``build_tiny_chat(out_dir, spec)`` dispatches on ``spec["arch"]``."""

from __future__ import annotations

import importlib

# arch -> (module, builder); each builder writes a folder that AutoProcessor and AutoModelForImageTextToText load
BUILDERS = {
    "qwen2_5_vl": ("vlmrepro.demo.chat.qwen", "build_qwen2_5_vl"),
    "qwen3_vl": ("vlmrepro.demo.chat.qwen", "build_qwen3_vl"),
    "llava_onevision": ("vlmrepro.demo.chat.onevision_internvl", "build_llava_onevision"),
    "internvl": ("vlmrepro.demo.chat.onevision_internvl", "build_internvl"),
    "gemma3": ("vlmrepro.demo.chat.gemma_smolvlm", "build_gemma3"),
    "smolvlm": ("vlmrepro.demo.chat.gemma_smolvlm", "build_smolvlm"),
}


def build_tiny_chat(out_dir, spec: dict) -> None:
    arch = spec.get("arch")
    if arch not in BUILDERS:
        raise ValueError(f"tiny chat model: arch must be one of {sorted(BUILDERS)}, got {arch!r}")
    module, name = BUILDERS[arch]
    getattr(importlib.import_module(module), name)(out_dir, spec)
