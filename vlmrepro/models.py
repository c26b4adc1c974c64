"""The transformers and open_clip backends of the model contract (vlmrepro/backends.py). Hub snapshots and the
embedded tiny models are both plain directories loaded by the same code.

* ``VisionLanguageModel(model_dir, family, dtype, device)`` — Hugging Face VLMs (LLaVA-1.5, LLaVA-NeXT, BLIP-2,
  InstructBLIP): ``prompt_token_lower_bounds(prompts)``, ``generate(images, prompts, max_new_tokens)``.
* ``ClipModel(model_dir, dtype, device)`` — open_clip models saved as ``open_clip_config.json`` + weights (the
  layout of open_clip's Hugging Face hub repositories): ``encode_images``, ``encode_texts``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from pathlib import Path

import torch

from .backends import Generation, pick_device, read_revision
from .datasets import IMAGE_ASPECT_RATIOS, pad_to_square, processor_mean_colour
from .registry import VLM_CLASSES

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(name: str, device: str) -> torch.dtype:
    """The configured dtype on a GPU; float32 on the CPU (bf16/fp16 matmuls there are slow and inexact)."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name] if device.startswith("cuda") else torch.float32


ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")


def pick_attention(name: str, device: str) -> str:
    """``auto``: FlashAttention 2 on a GPU where the flash_attn package is installed, else PyTorch SDPA."""
    import importlib.util

    if name not in ATTENTION:
        raise ValueError(f"unknown attention implementation {name!r}; expected one of {ATTENTION}")
    if name != "auto":
        return name
    return "flash_attention_2" if device.startswith("cuda") and importlib.util.find_spec("flash_attn") else "sdpa"


KV_CACHES = ("auto", "static", "dynamic")
STATIC_CACHE_FAMILIES = ("llava", "llava_next")  # decoder-only generation from input ids (BLIP-2 generates from embeddings)


def pick_kv_cache(name: str, family: str, device: str) -> str:
    """``auto``: a static KV cache (and, by transformers, a compiled decoding step) for the LLaVA families on a GPU,
    where a dynamic cache grows by a copy at every step, else dynamic; ``static`` anywhere (uncompiled on the CPU);
    ``dynamic``."""
    if name not in KV_CACHES:
        raise ValueError(f"unknown kv_cache {name!r}; expected one of {KV_CACHES}")
    if name == "auto":
        return "static" if device.startswith("cuda") and family in STATIC_CACHE_FAMILIES else "dynamic"
    return name


def model_class(family: str):
    """The transformers class of a VLM family (registry.VLM_CLASSES)."""
    import transformers

    if family not in VLM_CLASSES:
        raise ValueError(f"unknown VLM family {family!r}; expected one of {tuple(VLM_CLASSES)}")
    return getattr(transformers, VLM_CLASSES[family])


@functools.cache
def _cache_keyword(model_class) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_argument(model, cache) -> dict:
    """The keyword a model's forward takes its KV cache by: ``cache`` in recent transformers 5 releases,
    ``past_key_values`` before them (5.17 swallows an unknown ``cache=`` into its kwargs and silently starts a fresh
    cache, so the keyword is read from the signature, once per model class)."""
    return {_cache_keyword(type(model)): cache}


PADDING_SIDES = ("left", "right", "checkpoint")
# the family of any transformers image-text-to-text model prompted through its processor's chat template
CHAT_FAMILY = "chat"
ASSISTANT_TURN = "{assistant}"


class VisionLanguageModel:
    """Greedy batched generation; the weights load on first use (a job whose every prompt overflows the context
    never loads them).

    ``padding_side``: ``left`` (the only correct side for batched decoder-only generation) or ``checkpoint``, the
    side the checkpoint's own tokenizer config sets, as upstream ran it (docs/protocol.md#precision-batching-and-padding).
    """

    def __init__(
        self,
        model_dir,
        family: str,
        dtype: str = "bfloat16",
        device: str = "auto",
        padding_side: str = "left",
        attention: str = "auto",
        image_aspect_ratio: str = "original",
        kv_cache: str = "dynamic",
        trust_remote_code: bool = False,
        name: str = "",
        image_backend: str | None = None,
        anyres_padding: str = "upstream",
    ):
        self.model_dir, self.family = str(model_dir), family
        self.name = name or self.model_dir
        self.trust_remote_code = trust_remote_code
        self.image_backend = image_backend
        model_class(family)  # validate early
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.attention = pick_attention(attention, self.device)
        self.static_cache = pick_kv_cache(kv_cache, family, self.device) == "static"
        self.static_caches: dict[int, object] = {}  # batch size -> the StaticCache every batch of that size reuses
        self.static_cache_len = self.static_cache_allocations = 0
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"{model_dir}: padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
        if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(f"{model_dir}: image_aspect_ratio must be one of {IMAGE_ASPECT_RATIOS}, got {image_aspect_ratio!r}")
        self.config, self.processor = self._load_config_and_processor()
        self.completed_layout = complete_paper_era_layout(family, self.config, self.processor)
        self.anyres_padding = anyres_padding if family == "llava_next" else None
        if self.anyres_padding == "upstream":
            pad_tiles_as_transformers_4_40(self.processor.image_processor)
        elif self.anyres_padding not in (None, "centered"):
            raise ValueError(f"{model_dir}: anyres_padding must be upstream or centered, got {anyres_padding!r}")
        config = self.config
        self.tokenizer = self.processor.tokenizer
        self.checkpoint_padding_side = self.tokenizer.padding_side
        if padding_side != "checkpoint":
            self.tokenizer.padding_side = padding_side
        # fine-tuned LLaVA models see every image padded to a square, as they were trained (model_vqa pads too)
        self.pad_fill = processor_mean_colour(self.processor.image_processor) if image_aspect_ratio == "pad" else None
        self.max_context = int(config.text_config.max_position_embeddings)
        # InstructBLIP's Q-Former reads the prompt too, through a position table of its own (512 in the paper's)
        self.qformer_positions = (
            int(config.qformer_config.max_position_embeddings) if hasattr(self.processor, "qformer_tokenizer") else None
        )
        # rotary positions of three axes (Qwen2.5-VL, Qwen3-VL): text after an image sits at positions derived from its
        # grid, not at its index
        rope = getattr(config.text_config, "rope_parameters", None) or {}
        self.multimodal_positions = bool(rope.get("mrope_section"))
        # a BLIP-2 fine-tuned at LAVIS's 364 px keeps that size in its processor: its vision tower's position grid is
        # interpolated to it, as LAVIS does
        processor_size = (getattr(self.processor.image_processor, "size", None) or {}).get("height")
        tower_size = getattr(getattr(config, "vision_config", None), "image_size", None)
        self.interpolate_pos_encoding = family in ("blip2", "instructblip") and processor_size not in (None, tower_size)
        self._model = None
        self._processor_lock = threading.Lock()
        # a chat template writes every special token itself (Gemma 3's <bos> included): the tokenizer adds none
        self.tokenizer_options = {"add_special_tokens": False} if family == CHAT_FAMILY else {}

    def _load_config_and_processor(self):
        """The checkpoint's config and processor. A chat model must be an image-text-to-text model whose processor
        has a chat template; code from the hub runs only where the config opts in (models.<m>.trust_remote_code)."""
        from transformers import AutoConfig, AutoProcessor
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        remote = {"trust_remote_code": self.trust_remote_code}
        try:
            config = AutoConfig.from_pretrained(self.model_dir, **remote)
            processor = AutoProcessor.from_pretrained(self.model_dir, **remote, **processor_options(self.image_backend))
        except ValueError as error:
            if "trust_remote_code" not in str(error):
                raise
            raise ValueError(
                f"model {self.name}: {self.model_dir} runs code from its hub repository, which is off by default; "
                f"read that code, then set models.{self.name}.trust_remote_code: true (or use a transformers-native "
                "conversion such as an -hf repository)"
            ) from error
        if self.family == CHAT_FAMILY:
            if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not self.trust_remote_code:
                raise ValueError(
                    f"model {self.name}: {config.model_type!r} is not an image-text-to-text model in transformers, "
                    f"so family {CHAT_FAMILY} cannot load it; use a vision-language checkpoint (or its family)"
                )
            if not getattr(processor, "chat_template", None):
                raise ValueError(
                    f"model {self.name}: its processor has no chat template, which family {CHAT_FAMILY} prompts "
                    "through; use the instruction-tuned checkpoint, or give it a family with a prompt template"
                )
        return config, processor

    @property
    def model(self):
        if self._model is None:
            self._model = model_class(self.family).from_pretrained(
                self.model_dir,
                config=self.config,  # with the keys complete_paper_era_layout filled in
                dtype=self.dtype,
                attn_implementation=self.attention,
                trust_remote_code=self.trust_remote_code,
            ).to(self.device)
            self._model.eval()
            if self.completed_layout:
                fit_image_token_row(self._model, self.config)
        return self._model

    def prompt_template(self, template: str, image: bool = True) -> str:
        """The full prompt template of a job (with its ``{question}`` slot). A chat model's config template is the
        user turn's text; its processor's chat template wraps it with the image and the turn markers, and
        ``{assistant}`` in it starts the model's turn with the text after it (chain of thought's "Let's think step
        by step."). Other families' templates are already full prompts. ``image=False``: the turn without its image
        (the text-only prior of probabilistic inference)."""
        if self.family != CHAT_FAMILY:
            return template
        user, _, assistant = template.partition(ASSISTANT_TURN)
        parts = [{"type": "image"}] if image else []
        messages = [{"role": "user", "content": [*parts, {"type": "text", "text": user}]}]
        if assistant:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=not assistant, continue_final_message=bool(assistant)
        )

    def prompt_token_lower_bounds(self, prompts: list[str]) -> list[int]:
        """Text tokens with each image placeholder counted once: a prompt above the context here overflows for
        certain, whatever the image expands to."""
        return [len(ids) for ids in self.tokenizer(prompts, **self.tokenizer_options)["input_ids"]]

    def instruction_overflows(self, prompts: list[str]) -> list[str | None]:
        """Per prompt, why the model cannot read it whatever its language model's context holds, or None: an
        instruction longer than the Q-Former's position table (InstructBLIP; upstream's run crashed there, the N/A
        cells of its StanfordCars closed world)."""
        if self.qformer_positions is None:
            return [None] * len(prompts)
        counts = [len(ids) for ids in self.processor.qformer_tokenizer(prompts)["input_ids"]]
        return [
            f"instruction needs {n} Q-Former tokens, more than the Q-Former's {self.qformer_positions} positions"
            if n > self.qformer_positions
            else None
            for n in counts
        ]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def padding_side(self) -> str:
        return self.tokenizer.padding_side

    def preprocess(self, images, prompts: list[str]):
        """Processor outputs on the CPU (pinned when the model is on a GPU, for an asynchronous copy)."""
        if self.pad_fill is not None:
            images = [pad_to_square(image, self.pad_fill) for image in images]
        if self.family == CHAT_FAMILY:  # one image per prompt, as the current processors (Gemma 3, SmolVLM) want it
            images = [[image] for image in images]
        # one call at a time: a fast tokenizer sets its padding on the shared Rust object for each call, so calls
        # from the loader's threads at once can pad a batch to another batch's length (a crash, seen in make oracle)
        with self._processor_lock:
            inputs = self.processor(images=images, text=prompts, padding=True, return_tensors="pt", **self.tokenizer_options)
        if self.device.startswith("cuda"):
            for key in inputs:
                inputs[key] = inputs[key].pin_memory()
        return inputs

    def input_lengths(self, inputs) -> list[int]:
        return inputs["attention_mask"].sum(dim=1).tolist()

    def to_device(self, inputs):
        """Inputs on the model's device, pixels in the model's dtype."""
        inputs = inputs.to(self.device, non_blocking=True)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def encode(self, images, prompts: list[str]):
        return self.to_device(self.preprocess(images, prompts))

    @torch.inference_mode()
    def generate(self, inputs, max_new_tokens: int, min_new_tokens: int = 0) -> list[Generation]:
        """Per item, the full decoded sequence (prompt + generation, special tokens skipped, as upstream's zero-shot
        scripts decode it) and the generated tokens alone (as the LLaVA code base's ``model_vqa`` returns them).
        ``min_new_tokens`` forbids an earlier end of sequence (LAVIS's ``min_len``)."""
        extra = {"interpolate_pos_encoding": True} if self.interpolate_pos_encoding else {}
        if min_new_tokens:
            extra["min_new_tokens"] = min_new_tokens
        if self.static_cache:  # preallocated KV cache; on CUDA transformers compiles the decoding step (CUDA graphs)
            cache = self.reused_static_cache(inputs["input_ids"].shape[0], inputs["input_ids"].shape[1] + max_new_tokens)
            extra.update(cache_argument(self.model, cache))
        if self.family == CHAT_FAMILY:  # plain greedy, as for the paper's models: no checkpoint repetition penalty
            extra["repetition_penalty"] = 1.0
        positions = contextlib.nullcontext()
        if self.padding_side == "right" and self.family != CHAT_FAMILY:
            pad_position = -1 if self.config.text_config.model_type == "opt" else 1
            extra["position_ids"] = mask_positions(inputs["attention_mask"], pad_position)
            decoder = self.model.language_model if self.family in ("blip2", "instructblip") else self.model
            positions = positions_from_running_mask(decoder, pad_position)
        with positions:
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, **extra)
        prompt = inputs["input_ids"]
        new = output
        if output.shape[1] >= prompt.shape[1] and torch.equal(output[:, : prompt.shape[1]], prompt.to(output.device)):
            new = output[:, prompt.shape[1] :]  # decoder-only models return the prompt too
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        return [Generation(*pair) for pair in zip(texts, self.processor.batch_decode(new, skip_special_tokens=True))]

    def reused_static_cache(self, batch_size: int, length: int):
        """The static KV cache of a generate call: one per batch size, allocated once and reset between calls, so
        that the compiled decoding step (CUDA graphs on a GPU) sees one shape and one buffer for every batch. The
        length, rounded up to 64 positions, only grows: a longer prompt replaces every cache (and compiles again)."""
        from transformers import StaticCache

        length = max(self.static_cache_len, -(-length // 64) * 64)
        if length != self.static_cache_len:
            self.static_caches.clear()
            self.static_cache_len = length
        cache = self.static_caches.get(batch_size)
        if cache is None:
            cache = self.static_caches[batch_size] = StaticCache(config=self.model.config, max_cache_len=length)
            self.static_cache_allocations += 1
        else:
            cache.reset()
        return cache

    @classmethod
    def for_job(cls, model_dir, run: dict) -> tuple["VisionLanguageModel", str]:
        """The model of a job's params (family, dtype, device, padding side) and its recorded revision."""
        vlm = cls(
            model_dir,
            run["family"],
            run["dtype"],
            run["device"],
            padding_side=run["padding_side"],
            attention=run.get("attention", "auto"),
            image_aspect_ratio=run.get("image_aspect_ratio", "original"),
            kv_cache=run.get("kv_cache", "dynamic"),
            trust_remote_code=run.get("trust_remote_code", False),
            name=run.get("model", ""),
            image_backend=run.get("image_backend"),
            anyres_padding=run.get("anyres_padding", "upstream"),
        )
        vlm.template = vlm.prompt_template(run["template"]) if "template" in run else None
        return vlm, read_revision(model_dir)

    @classmethod
    def around(cls, model, files_dir, run: dict) -> "VisionLanguageModel":
        """A model already in memory (a fine-tune between epochs) behind the same interface; ``files_dir`` holds its
        processor and config."""
        vlm, _ = cls.for_job(files_dir, run)
        vlm._model = model
        return vlm

    def generation_settings(self) -> dict:
        return {
            "padding_side": self.padding_side,
            "checkpoint_padding_side": self.checkpoint_padding_side,
            "image_aspect_ratio": "original" if self.pad_fill is None else "pad",
            "image_backend": type(self.processor.image_processor).__name__,
            **({"anyres_padding": self.anyres_padding} if self.anyres_padding else {}),
            "interpolate_pos_encoding": self.interpolate_pos_encoding,
            "kv_cache": "static" if self.static_cache else "dynamic",
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "attention": self.attention,
            "max_context": self.max_context,
            # a checkpoint revision from before the image-token update, completed from its config
            **({"completed_layout": self.completed_layout} if self.completed_layout else {}),
            # a chat model's full prompt comes from its processor: recorded, and part of every cache key
            **({"chat_prompt": self.template} if self.family == CHAT_FAMILY else {}),
        }


def pad_tiles_as_transformers_4_40(image_processor) -> None:
    """LLaVA-NeXT's tile canvas padded as transformers 4.40 padded it: half the leftover on each side, rounded down,
    so an odd leftover leaves the canvas a pixel short and the tiles cut from it are resized to full size. Later
    versions put the extra pixel on the right or bottom; for the images where the two differ the tiles differ
    everywhere (benchmarks/ORACLE.md), and upstream's numbers were made with 4.40's."""
    torchvision_layout = not type(image_processor).__name__.endswith("Pil")  # it takes [left, top, right, bottom]

    def floor_padding(original_resolution, target_resolution):
        (height, width), (target_height, target_width) = original_resolution, target_resolution
        y, x = (target_height - height) // 2, (target_width - width) // 2
        return [x, y, x, y] if torchvision_layout else ((y, y), (x, x))

    image_processor._get_padding_size = floor_padding


def mask_positions(attention_mask: torch.Tensor, pad_position: int) -> torch.Tensor:
    """Each token's position among its row's unmasked tokens; masked ones at ``pad_position``."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, pad_position)


@contextlib.contextmanager
def positions_from_running_mask(decoder, pad_position: int):
    """Generate with every step's positions computed from the running attention mask, as transformers 4.40 did
    (OPT's learned positions from the mask, Llama's prepare step from the mask; pads at -1 and 1). transformers 5
    continues every row from its last column's position instead, which for a right-padded row is a pad's: its new
    tokens would sit at positions 1, 2, ... rather than after its prompt (docs/protocol.md#precision-batching-and-
    padding). Only right-padded batches (batching: upstream on BLIP-2) differ; left-padded ones are unchanged."""
    update = decoder._update_model_kwargs_for_generation

    def updated(*args, **kwargs):
        model_kwargs = update(*args, **kwargs)
        if model_kwargs.get("position_ids") is not None and model_kwargs.get("attention_mask") is not None:
            model_kwargs["position_ids"] = mask_positions(model_kwargs["attention_mask"], pad_position)
        return model_kwargs

    decoder._update_model_kwargs_for_generation = updated
    try:
        yield
    finally:
        del decoder._update_model_kwargs_for_generation


def processor_options(image_backend: str | None) -> dict:
    """AutoProcessor keywords for models.<m>.image_backend (None: transformers' own choice)."""
    if image_backend not in (None, "pil", "torchvision"):
        raise ValueError(f"unknown image_backend {image_backend!r}; expected pil, torchvision or null")
    return {"backend": image_backend} if image_backend else {}


def complete_paper_era_layout(family: str, config, processor) -> list[str]:
    """Fill in what later hub revisions of the paper's checkpoints added for transformers >= 4.45, where a
    checkpoint lacks it, from its own model config (docs/protocol.md#hub-revisions). The paper ran revisions from
    before that update, whose models expanded the image placeholder themselves; transformers 5 expects the processor
    to do it. Returns the keys filled in (none for a current revision).

    * llava-hf (LLaVA-1.5, LLaVA-NeXT): the processor's ``patch_size``, ``vision_feature_select_strategy`` and the
      class token (``num_additional_image_tokens``), as their processor_config.json now has them;
    * Salesforce (BLIP-2, InstructBLIP): ``num_query_tokens`` <image> tokens before the prompt (the processor adds
      the token to the tokenizer) and the config's ``image_token_index``, the layout the old models built from
      query embeddings placed before the text embeddings."""
    filled = []
    if family in ("llava", "llava_next") and getattr(processor, "patch_size", 0) is None:
        processor.patch_size = config.vision_config.patch_size
        processor.vision_feature_select_strategy = config.vision_feature_select_strategy
        processor.num_additional_image_tokens = 1  # the CLIP tower's class token
        filled += ["patch_size", "vision_feature_select_strategy", "num_additional_image_tokens"]
    if family in ("blip2", "instructblip") and getattr(processor, "num_query_tokens", 0) is None:
        processor.num_query_tokens = config.num_query_tokens
        filled.append("num_query_tokens")
        if config.image_token_index is None:
            config.image_token_index = processor.tokenizer.convert_tokens_to_ids(processor.image_token.content)
            filled.append("image_token_index")
    return filled


def fit_image_token_row(model, config) -> None:
    """An image token added after the vocabulary (InstructBLIP's <image> after Vicuna's 32,001 rows) needs an input
    embedding row; its value is never read (query outputs replace it), and the output layer keeps its size, so the
    model predicts over the vocabulary it was trained with."""
    embeddings = model.get_input_embeddings()
    rows = config.image_token_index + 1
    if embeddings.num_embeddings >= rows:
        return
    grown = torch.nn.Embedding(rows, embeddings.embedding_dim, dtype=embeddings.weight.dtype, device=embeddings.weight.device)
    with torch.no_grad():
        grown.weight.zero_()
        grown.weight[: embeddings.num_embeddings] = embeddings.weight
    model.language_model.set_input_embeddings(grown)


def split_preprocess(preprocess):
    """open_clip's preprocessing as (the steps before ToTensor, mean, std): its last two steps must be ToTensor and
    Normalize, which :meth:`ClipModel.encode_images` then does on the device."""
    from torchvision import transforms

    *before, to_tensor, normalize = preprocess.transforms
    if not isinstance(to_tensor, transforms.ToTensor) or not isinstance(normalize, transforms.Normalize):
        raise ValueError(f"unexpected CLIP preprocessing (expected ... ToTensor, Normalize): {preprocess}")
    return transforms.Compose(before), list(normalize.mean), list(normalize.std)


class ClipModel:
    """open_clip model from a directory (``local-dir:`` schema): the hub repo layout and the tiny models alike."""

    def __init__(self, model_dir, dtype: str = "float32", device: str = "auto"):
        import open_clip

        self.model_dir = str(model_dir)
        if not (Path(model_dir) / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: no open_clip_config.json (not an open_clip model directory)")
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        model, _, self.preprocess = open_clip.create_model_and_transforms(f"local-dir:{os.path.abspath(model_dir)}")
        self.resize_and_crop, mean, std = split_preprocess(self.preprocess)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)[:, None, None]
        self.model = model.to(self.device, self.dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{os.path.abspath(model_dir)}")

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        feats = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i : i + batch_size]).to(self.device)
            feats.append(torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1))
        return torch.cat(feats)

    def truncated_classes(self, classes: list[str], text_template: str) -> list[dict]:
        """The classes whose prompt the tokenizer cuts at its text context (77 tokens for CLIP), with the prompt's
        full token count. Upstream's tokenizer cut them too, so they are scored cut, and listed."""
        from open_clip.tokenizer import HFTokenizer

        from .prompts import render

        names = list(dict.fromkeys(classes))
        prompts = [render(text_template, label=name) for name in names]
        if isinstance(self.tokenizer, HFTokenizer):  # SigLIP: a transformers tokenizer inside
            counts = [len(ids) for ids in self.tokenizer.tokenizer(prompts)["input_ids"]]
        else:  # open_clip's BPE, with its start and end tokens
            counts = [len(self.tokenizer.encode(prompt)) + 2 for prompt in prompts]
        limit = self.tokenizer.context_length
        return [{"class": c, "tokens": n, "context": limit} for c, n in zip(names, counts) if n > limit]

    def uint8_pixels(self, image) -> torch.Tensor:
        """The image resized and cropped as the model's preprocessing does, as uint8 channels-first pixels: a
        quarter of float32's bytes to decode, batch and copy to the device (:meth:`encode_images` scales them)."""
        from torchvision.transforms.functional import pil_to_tensor

        return pil_to_tensor(self.resize_and_crop(image))

    @torch.inference_mode()
    def encode_images(self, pixel_batch: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings; uint8 pixels are scaled and normalised on the device, in float32 and by the
        same operations as the preprocessing's ToTensor and Normalize (the same values on a CPU)."""
        pixels = pixel_batch.to(self.device, non_blocking=True)
        if pixels.dtype == torch.uint8:
            pixels = (pixels.float().div(255) - self.mean) / self.std
        feats = self.model.encode_image(pixels.to(self.dtype))
        return torch.nn.functional.normalize(feats.float(), dim=-1)
