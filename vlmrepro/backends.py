"""The contract every model backend keeps, and the one table a job's backend is loaded through.

A rule loads a model for its job, then calls the few operations of its kind:

* a :class:`Generator` (``VisionLanguageModel`` on transformers, ``VllmModel`` on vLLM) answers prompts about
  images: generation, the robustness checks;
* an :class:`ImageTextEncoder` (``ClipModel`` on open_clip) embeds images and texts: CLIP zero-shot, linear heads;
* an API model (``vlmrepro.api.ApiModel``) answers one request at a time over the network.

Adding a backend is one class that keeps its contract and one entry of ``GENERATORS``; adding a VLM family is one
entry of ``registry.VLM_CLASSES``. The shared pieces (``Generation``, ``pick_device``, ``read_revision``) live here,
so backends import this module and never each other.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, NamedTuple, Protocol


class Generation(NamedTuple):
    text: str  # prompt + generation, decoded
    new_text: str  # the generated tokens alone


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def read_revision(model_dir) -> str:
    """The commit a hub snapshot was resolved to (written by the download rule), or 'local' for built models."""
    record = Path(model_dir) / "REVISION"
    return record.read_text().strip() if record.is_file() else "local"


class Generator(Protocol):
    """What ``evaluate.run_generation`` and the invariance check call."""

    max_context: int
    padding_side: str

    def prompt_token_lower_bounds(self, prompts: list[str]) -> list[int]: ...

    def instruction_overflows(self, prompts: list[str]) -> list[str | None]: ...

    def preprocess(self, images: list, prompts: list[str]) -> Any: ...

    def input_lengths(self, inputs: Any) -> list[int]: ...

    def to_device(self, inputs: Any) -> Any: ...

    def generate(self, inputs: Any, max_new_tokens: int, min_new_tokens: int = 0) -> list[Generation]: ...

    def generation_settings(self) -> dict: ...


class ImageTextEncoder(Protocol):
    """What ``evaluate.run_clip_zero_shot`` and the feature extraction call."""

    device: str

    def encode_texts(self, texts: list[str]) -> Any: ...

    def uint8_pixels(self, image) -> Any: ...

    def encode_images(self, pixel_batch) -> Any: ...


# generation backends (models.<m>.backend): module and class, imported only when a job asks for it (vLLM is an
# optional install)
GENERATORS = {
    "transformers": ("vlmrepro.models", "VisionLanguageModel"),
    "vllm": ("vlmrepro.vllm_backend", "VllmModel"),
}


def load_generator(model_dir, run: dict) -> tuple[Generator, str]:
    """The generator of a job's params (``run["backend"]``, transformers by default) and the model's revision."""
    backend = run.get("backend", "transformers")
    if backend not in GENERATORS:
        raise ValueError(
            f"model {run.get('model', model_dir)}: unknown backend {backend!r} (one of {sorted(GENERATORS)})"
        )
    module, name = GENERATORS[backend]
    return getattr(importlib.import_module(module), name).for_job(model_dir, run)
