"""Tiny random-weight Qwen2.5-VL and Qwen3-VL chat models, built offline from their real transformers classes.

Each builder writes a folder laid out as the published instruct checkpoint is (Qwen/Qwen2.5-VL-7B-Instruct,
Qwen/Qwen3-VL-4B-Instruct): ``config.json`` + ``model.safetensors`` + ``generation_config.json`` of
``Qwen2_5_VLForConditionalGeneration`` / ``Qwen3VLForConditionalGeneration``, and the processor's files
(``Qwen2_5_VLProcessor`` / ``Qwen3VLProcessor`` with ``Qwen2VLImageProcessor``, the video processor and a
``Qwen2Tokenizer``), so ``AutoProcessor`` and ``AutoModelForImageTextToText`` load it as they load the hub's.

What mirrors the published checkpoints, at toy scale:
- the tokenizer is byte-level BPE (trained on the protocol's text by ``vlmrepro.demo.tiny._bpe_vocab``) followed by
  Qwen's fourteen special tokens in Qwen's order (``<|endoftext|>`` ... ``<|video_pad|>``), so the ids keep the hub's
  relative layout; ``<|im_end|>`` is the tokenizer's eos and ``<|endoftext|>`` its pad, as in the instruct
  checkpoints, and generation stops at either (``generation_config.eos_token_id``, as published);
- the chat template is the published one without tool calling: Qwen2.5-VL adds the default system prompt
  "You are a helpful assistant.", Qwen3-VL has none; an image part renders as
  ``<|vision_start|><|image_pad|><|vision_end|>``, which the processor expands to one ``<|image_pad|>`` per merged
  2x2 patch group;
- the vision towers keep their architecture (Qwen2.5-VL: window attention with a last full-attention block, SwiGLU;
  Qwen3-VL: learned interpolated position grid and DeepStack features into the first text layers), and the text
  models their multimodal RoPE (sections scaled down from [16, 24, 24] and interleaved [24, 20, 20]).

Spec keys read (all optional; defaults in ``DEFAULT_SPEC``): ``seed`` (weights from ``torch.manual_seed``),
``hidden``, ``layers``, ``heads``, ``kv_heads`` (text model), ``vision_width``, ``vision_depth``, ``vision_heads``,
``patch_size``, ``image_size`` (an image is resized to at most ``image_size``**2 pixels, so a 32x32 image is
(32/patch_size)**2 patches and a quarter as many image tokens), ``max_context`` (the text model's
``max_position_embeddings``), ``vocab_size`` (BPE vocabulary before the special tokens), ``padding_side``."""

from __future__ import annotations

from pathlib import Path

import torch

from ..tiny import _bpe_vocab

DEFAULT_SPEC = {
    "seed": 0,
    "hidden": 64,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "vision_width": 32,
    "vision_depth": 2,
    "vision_heads": 2,
    "patch_size": 8,
    "image_size": 32,
    "max_context": 4096,
    "vocab_size": 400,
    "padding_side": "left",
}

BPE_TRAINER_SPECIALS = {"<pad>", "</s>", "<unk>"}  # _bpe_vocab's, which Qwen's vocabulary does not have
# Qwen's special tokens in the order of the published vocabulary (ids 151643-151656 there)
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2.5-VL-Instruct's template (its chat_template.json), verbatim: a default system prompt when the chat has none
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL-Instruct's template without its tool-calling branches: no default system prompt, a system message's
# text parts joined, images and videos as in Qwen2.5-VL
QWEN3_VL_CHAT_TEMPLATE = """\
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].content is string %}
        {{- messages[0].content }}
    {%- else %}
        {%- for content in messages[0].content %}
            {%- if 'text' in content %}
                {{- content.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\\n' }}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == 'user' or message.role == 'assistant' %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def qwen_tokenizer(vocab_size: int, chat_template: str, padding_side: str = "left"):
    """A ``Qwen2Tokenizer`` (byte-level BPE with Qwen's pre-tokenizer) whose vocabulary is a tiny BPE followed by
    Qwen's special tokens."""
    from transformers import Qwen2Tokenizer

    trained, merges = _bpe_vocab(byte_level=True, vocab_size=vocab_size)
    # the trainer's own specials (<pad>, </s>, <unk>) are not Qwen's: drop them and renumber in trained order
    pieces = [
        piece for piece, _ in sorted(trained.items(), key=lambda item: item[1]) if piece not in BPE_TRAINER_SPECIALS
    ]
    vocab = {piece: index for index, piece in enumerate(pieces + QWEN_SPECIAL_TOKENS)}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,  # byte-level: every text is encodable, and the hub's config has no unk token either
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=QWEN_SPECIAL_TOKENS[1:],
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        padding_side=padding_side,  # an init argument, so that tokenizer_config.json records it
    )
    tokenizer.chat_template = chat_template  # the hub's tokenizer_config.json carries it too
    return tokenizer


def _spec(spec: dict | None) -> dict:
    spec = {**DEFAULT_SPEC, **(spec or {})}
    if spec["hidden"] % spec["heads"] or (spec["hidden"] // spec["heads"]) % 8:
        raise ValueError(f"tiny Qwen: hidden/heads must be a multiple of 8 (multimodal RoPE sections), got {spec}")
    return spec


def _token_ids(tokenizer) -> dict:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def _text_config(tokenizer, spec: dict) -> dict:
    """The fields the two text configs share; ids as in the hub's config.json (bos <|endoftext|>, eos <|im_end|>)."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden"],
        intermediate_size=3 * spec["hidden"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        max_position_embeddings=spec["max_context"],
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _pixel_bounds(spec: dict) -> dict:
    """Resize bounds of the image processor: at least one merged 2x2 patch group, at most image_size**2 pixels."""
    factor = spec["patch_size"] * 2
    return {"shortest_edge": factor * factor, "longest_edge": max(spec["image_size"] ** 2, factor * factor)}


def _save(model, processor, out_dir, spec: dict) -> None:
    tokenizer = processor.tokenizer
    model.eval()
    # as the hub's generation_config.json: pad and bos <|endoftext|>, stop at <|im_end|> or <|endoftext|>
    model.generation_config.bos_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def build_qwen2_5_vl(out_dir, spec: dict) -> None:
    """Tiny Qwen2.5-VL-Instruct: window-attention ViT (last block full attention), 2x2 patch merger, Qwen2 text model
    with multimodal RoPE, CLIP-normalised pixels."""
    import transformers as tf

    spec = _spec(spec)
    torch.manual_seed(spec["seed"])
    tokenizer = qwen_tokenizer(spec["vocab_size"], QWEN2_5_VL_CHAT_TEMPLATE, spec["padding_side"])
    patch, merge, frames = spec["patch_size"], 2, 2
    size = _pixel_bounds(spec)
    processor = tf.Qwen2_5_VLProcessor(
        image_processor=tf.Qwen2VLImageProcessor(
            size=size, patch_size=patch, temporal_patch_size=frames, merge_size=merge
        ),
        video_processor=tf.Qwen2VLVideoProcessor(
            size=size, patch_size=patch, temporal_patch_size=frames, merge_size=merge
        ),
        tokenizer=tokenizer,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    half_head = spec["hidden"] // spec["heads"] // 2
    config = tf.Qwen2_5_VLConfig(
        text_config=tf.Qwen2_5_VLTextConfig(
            **_text_config(tokenizer, spec),
            max_window_layers=spec["layers"],
            use_sliding_window=False,
            # the published [16, 24, 24] of a 64-frequency head, scaled to this head's frequencies
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [half_head // 4, half_head * 3 // 8, half_head - half_head // 4 - half_head * 3 // 8],
            },
        ),
        vision_config=tf.Qwen2_5_VLVisionConfig(
            depth=spec["vision_depth"],
            hidden_size=spec["vision_width"],
            intermediate_size=2 * spec["vision_width"],
            num_heads=spec["vision_heads"],
            patch_size=patch,
            spatial_merge_size=merge,
            temporal_patch_size=frames,
            out_hidden_size=spec["hidden"],
            # windows of 2x2 merged groups (the hub's 112 px are 4x4 of 28 px); the last block attends globally
            window_size=patch * merge * 2,
            fullatt_block_indexes=[spec["vision_depth"] - 1],
        ),
        **_token_ids(tokenizer),
    )
    _save(tf.Qwen2_5_VLForConditionalGeneration(config), processor, out_dir, spec)


def build_qwen3_vl(out_dir, spec: dict) -> None:
    """Tiny Qwen3-VL-Instruct: ViT with a learned position grid interpolated to each image and DeepStack features
    from its layers into the first text layers, Qwen3 text model (q/k norms, explicit head_dim) with interleaved
    multimodal RoPE, pixels normalised to [-1, 1]."""
    import transformers as tf

    spec = _spec(spec)
    torch.manual_seed(spec["seed"])
    tokenizer = qwen_tokenizer(spec["vocab_size"], QWEN3_VL_CHAT_TEMPLATE, spec["padding_side"])
    patch, merge, frames = spec["patch_size"], 2, 2
    size = _pixel_bounds(spec)
    half = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    processor = tf.Qwen3VLProcessor(
        image_processor=tf.Qwen2VLImageProcessor(
            size=size, patch_size=patch, temporal_patch_size=frames, merge_size=merge, **half
        ),
        video_processor=tf.Qwen3VLVideoProcessor(
            size=size, patch_size=patch, temporal_patch_size=frames, merge_size=merge, **half
        ),
        tokenizer=tokenizer,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    head_dim = spec["hidden"] // spec["heads"]
    half_head = head_dim // 2
    # deepstack: one vision layer per text layer it feeds, at most every vision layer (the hub: 3 of 27 into 3 of 36)
    deepstack = list(range(min(spec["vision_depth"], spec["layers"])))
    config = tf.Qwen3VLConfig(
        text_config=tf.Qwen3VLTextConfig(
            **_text_config(tokenizer, spec),
            head_dim=head_dim,
            # the published interleaved [24, 20, 20] of a 64-frequency head, scaled to this head's frequencies
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_interleaved": True,
                "mrope_section": [half_head - 2 * (half_head * 5 // 16), half_head * 5 // 16, half_head * 5 // 16],
            },
        ),
        vision_config=tf.Qwen3VLVisionConfig(
            depth=spec["vision_depth"],
            hidden_size=spec["vision_width"],
            intermediate_size=2 * spec["vision_width"],
            num_heads=spec["vision_heads"],
            patch_size=patch,
            spatial_merge_size=merge,
            temporal_patch_size=frames,
            out_hidden_size=spec["hidden"],
            num_position_embeddings=64,  # an 8x8 learned grid (the hub's is 48x48), interpolated to each image
            deepstack_visual_indexes=deepstack,
        ),
        **_token_ids(tokenizer),
    )
    _save(tf.Qwen3VLForConditionalGeneration(config), processor, out_dir, spec)
