"""Batch size from free GPU memory (``batch_size: auto``).

A batch costs, per item, its KV cache (every layer's keys and values for prompt + new tokens) plus the prefill's
transient activations; the weights are counted once. Both are estimated from the model's config before the weights
load, so a card that cannot hold even one item fails with a message instead of an out-of-memory error halfway
through a job."""

from __future__ import annotations

GIB = 2**30
# share of the free memory a batch may plan for: allocator fragmentation and CUDA workspaces take the rest
USABLE_FRACTION = 0.85


def parameter_count(config, family: str) -> int:
    """Parameters of the model a config describes, counted on the meta device (nothing allocated)."""
    import torch

    from .models import model_class

    with torch.device("meta"):
        model = model_class(family)._from_config(config)
    return sum(p.numel() for p in model.parameters())


def image_tokens(config, family: str, vlm=None, largest_image: tuple[int, int] | None = None) -> int:
    """Most language-model positions one image of the job can take. A chat model's count depends on the image's
    size (Qwen2.5-VL: one token per 28 x 28 pixels, hundreds to thousands) and on its processor, which is asked:
    ``vlm`` with the job's ``largest_image`` (width, height)."""
    if family == "chat":
        if vlm is None or largest_image is None:
            raise ValueError("a chat model's image tokens are counted by its processor: give vlm and largest_image")
        return processor_image_tokens(vlm, largest_image)
    if family == "llava":
        return int(config.image_seq_length)
    if family == "llava_next":
        vision = config.vision_config
        per_tile = (vision.image_size // vision.patch_size) ** 2
        tiles = max(h * w for h, w in config.image_grid_pinpoints) // vision.image_size**2
        side = vision.image_size // vision.patch_size
        return per_tile * (1 + tiles) + side * int(tiles**0.5)  # base image, tiles, one newline per tile row
    return int(getattr(config, "num_query_tokens", 0))


def processor_image_tokens(vlm, size: tuple[int, int]) -> int:
    """Positions a blank image of ``size`` takes once the processor has expanded it (its tiles, rows, separators):
    the prompt's length with it, less its length with the placeholder counted once."""
    from PIL import Image

    from .prompts import render

    prompt = render(vlm.prompt_template("{question}"), "What is it?")
    with_image = vlm.input_lengths(vlm.preprocess([Image.new("RGB", size)], [prompt]))[0]
    return with_image - vlm.prompt_token_lower_bounds([prompt])[0] + 1


def per_item_bytes(config, family: str, tokens: int, dtype_bytes: int) -> int:
    """KV cache of ``tokens`` positions plus prefill activations (hidden states, MLP and attention scores of one
    layer at a time, and the float32 logits of the last position)."""
    text = config.text_config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    kv = 2 * text.num_hidden_layers * kv_heads * head_dim * tokens * dtype_bytes
    intermediate = getattr(text, "intermediate_size", None) or getattr(text, "ffn_dim", 4 * text.hidden_size)
    activations = tokens * (4 * text.hidden_size + 3 * intermediate) * dtype_bytes
    scores = heads * tokens * tokens * dtype_bytes  # attention without a fused kernel
    return kv + activations + scores + 4 * text.vocab_size


def choose_batch_size(model: str, weights: int, per_item: int, free: int, max_batch: int) -> int:
    """Largest batch whose items fit beside the weights in the usable share of ``free`` bytes."""
    usable = int(free * USABLE_FRACTION) - weights
    if usable < per_item:
        raise MemoryError(
            f"model {model!r} does not fit this GPU even at batch size 1: it needs {weights / GIB:.1f} GiB of weights "
            f"+ {per_item / GIB:.2f} GiB per item, and {free / GIB:.1f} GiB are free ({USABLE_FRACTION:.0%} usable). "
            "Use a larger card, a smaller dtype, or free the GPU."
        )
    return max(1, min(max_batch, usable // per_item))


def auto_batch_size(vlm, model: str, max_text_tokens: int, max_new_tokens: int, max_batch: int,
                    largest_image: tuple[int, int] | None = None) -> int:  # fmt: skip
    """Batch size for ``vlm`` on its device (``max_batch`` on the CPU)."""
    if not vlm.device.startswith("cuda"):
        return max_batch
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(vlm.model_dir)
    dtype_bytes = torch.empty((), dtype=vlm.dtype).element_size()
    # loaded weights are already missing from the free memory
    weights = 0 if vlm.loaded else parameter_count(config, vlm.family) * dtype_bytes
    tokens = image_tokens(config, vlm.family, vlm, largest_image) + max_text_tokens + max_new_tokens
    free, _ = torch.cuda.mem_get_info(torch.device(vlm.device))
    return choose_batch_size(model, weights, per_item_bytes(config, vlm.family, tokens, dtype_bytes), free, max_batch)


def resolve_batch_size(vlm, run: dict, prompts: list[str], image_paths: list[str] = ()) -> int:
    """A job's batch size: the configured number, or ``auto`` from the device's free memory for the job's longest
    prompt and (for a chat model, whose image tokens grow with the image) its largest image. A backend that
    schedules its own requests (vLLM) takes the whole job in one call, so that its engine never drains between
    batches (its answers do not depend on batch-mates)."""
    if getattr(vlm, "manages_memory", False):
        return max(len(prompts), 1)
    if run["batch_size"] != "auto":
        return int(run["batch_size"])
    longest = max(vlm.prompt_token_lower_bounds(prompts), default=0)
    largest = None
    if vlm.family == "chat" and vlm.device.startswith("cuda"):
        from .evaluate import image_size

        largest = max((image_size(path) for path in image_paths), key=lambda s: s[0] * s[1], default=(1024, 1024))
    return auto_batch_size(vlm, run.get("model", vlm.model_dir), longest, run["max_new_tokens"], run["max_batch_size"],
                           largest)  # fmt: skip
