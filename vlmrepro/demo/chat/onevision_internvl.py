"""Tiny random-weight LLaVA-OneVision and InternVL3 chat models, built offline.

``build_llava_onevision`` mirrors llava-hf/llava-onevision-qwen2-7b-ov-hf: a SigLIP vision tower (no pooling head,
last layer, "full" feature strategy), a Qwen2 language model, anyres tiling with an image-newline embedding, a
``LlavaOnevisionProcessor`` (+ image and video processors) and the published chat template, which puts every image
as ``<image>\\n`` at the start of its turn.

``build_internvl`` mirrors OpenGVLab/InternVL3-8B-hf: an InternViT vision tower, pixel-shuffle downsampling (0.5)
into a Qwen2 language model, a ``GotOcr2ImageProcessor`` without tiling (one tile an image), an
``InternVLVideoProcessor`` and the published template, which writes ``<IMG_CONTEXT>\\n`` for an image; the processor
expands each into ``<img>`` + ``<IMG_CONTEXT>`` x image_seq_length + ``</img>``.

Both use a byte-level BPE trained on the demo corpus (vlmrepro.demo.tiny), wrapped in ``Qwen2Tokenizer`` with the
Qwen2 chat tokens (``<|endoftext|>`` pads, ``<|im_end|>`` ends a turn and generation) and the model's image tokens,
in the order the published vocabularies add them.

Keys of ``spec`` read (all optional): ``seed`` (0), ``hidden`` (language-model width, 64), ``vision_width`` (32),
``layers`` (2, in each tower), ``image_size`` (32), ``patch_size`` (8), ``max_context`` (max_position_embeddings,
32768 as both published language models), ``padding_side`` ("left")."""

from __future__ import annotations

from pathlib import Path

import torch

from ..tiny import _bpe_vocab, _vision

DEFAULTS = {
    "seed": 0,
    "hidden": 64,
    "vision_width": 32,
    "layers": 2,
    "image_size": 32,
    "patch_size": 8,
    "max_context": 32768,
    "padding_side": "left",
}

# Chat tokens of the Qwen2 vocabulary, in its order (151643-151645).
QWEN_CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# llava-hf/llava-onevision-*-hf chat_template.json: images, then videos, then text of each turn.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# OpenGVLab/InternVL3-*-hf chat template (transformers' convert_internvl_weights_to_hf.py): parts in order.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}"
)


def _spec(spec: dict | None) -> dict:
    spec = {**DEFAULTS, **(spec or {})}
    if spec["image_size"] % spec["patch_size"]:
        raise ValueError(f"tiny chat model: image_size {spec['image_size']} must be a multiple of patch_size")
    return spec


def _qwen_tokenizer(image_tokens: dict[str, str], padding_side: str, vocab_size: int = 400):
    """A byte-level BPE in a Qwen2Tokenizer: trained text tokens first, then the chat tokens, then the named image
    tokens (``image_tokens``: attribute -> token, e.g. context_image_token -> <IMG_CONTEXT>, which the processors
    read from the tokenizer), all special so that no text merges across them."""
    from transformers import Qwen2Tokenizer

    trained, merges = _bpe_vocab(byte_level=True, vocab_size=vocab_size)
    # Drop the trainer's own specials (<pad>, </s>, <unk>): Qwen2 has none of them, and they are unreachable by BPE.
    kept = [t for t, _ in sorted(trained.items(), key=lambda item: item[1]) if t not in ("<pad>", "</s>", "<unk>")]
    vocab = {token: i for i, token in enumerate(kept + QWEN_CHAT_TOKENS + list(dict.fromkeys(image_tokens.values())))}
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,  # Qwen2 starts a text with nothing
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_specific_special_tokens=image_tokens,
        padding_side=padding_side,
    )


def _qwen2_text(tok, spec: dict):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tok),
        hidden_size=spec["hidden"],
        intermediate_size=2 * spec["hidden"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=spec["max_context"],
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=False,  # both 7B/8B language models have their own lm_head
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def _save(model, processor, out_dir, spec: dict) -> None:
    model.eval()
    tok = processor.tokenizer
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    tok.padding_side = spec["padding_side"]  # saved in tokenizer_config.json, as a checkpoint's is
    tok.model_max_length = spec["max_context"]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def build_llava_onevision(out_dir, spec: dict) -> None:
    """LlavaOnevisionForConditionalGeneration of the ov-hf layout. The anyres grid is cut to 1x1..2x2 tiles of
    image_size and ``anyres_max_1`` pools the tiles' features back to one tile's worth, so an image costs about
    2 (image_size / patch_size)^2 tokens."""
    import transformers as tf

    spec = _spec(spec)
    size, patch = spec["image_size"], spec["patch_size"]
    tok = _qwen_tokenizer({"image_token": "<image>", "video_token": "<video>"}, spec["padding_side"])
    pinpoints = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    siglip_norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    processor = tf.LlavaOnevisionProcessor(
        image_processor=tf.LlavaOnevisionImageProcessor(
            size={"height": size, "width": size}, image_grid_pinpoints=pinpoints, **siglip_norm
        ),
        tokenizer=tok,
        video_processor=tf.LlavaOnevisionVideoProcessor(size={"height": size, "width": size}, **siglip_norm),
        num_image_tokens=(size // patch) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_1",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    vision = _vision(tf.SiglipVisionConfig, spec, vision_use_head=False)
    config = tf.LlavaOnevisionConfig(
        vision_config=vision,
        text_config=_qwen2_text(tok, spec),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_1",
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec["seed"])
    _save(tf.LlavaOnevisionForConditionalGeneration(config), processor, out_dir, spec)


def build_internvl(out_dir, spec: dict) -> None:
    """InternVLForConditionalGeneration of the InternVL3-8B-hf layout with one tile an image: (image_size /
    patch_size / 2)^2 <IMG_CONTEXT> tokens after the 0.5 pixel shuffle."""
    import transformers as tf

    spec = _spec(spec)
    size, patch = spec["image_size"], spec["patch_size"]
    if (size // patch) % 2:
        raise ValueError("tiny InternVL: image_size / patch_size must be even (pixel shuffle by 0.5)")
    image_seq_length = (size // patch // 2) ** 2
    tok = _qwen_tokenizer(
        {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
        spec["padding_side"],
    )
    imagenet_norm = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    processor = tf.InternVLProcessor(
        # The processor asks for crop_to_patches; max_patches=1 keeps every image to a single tile anyway.
        image_processor=tf.GotOcr2ImageProcessor(
            size={"height": size, "width": size}, crop_to_patches=False, min_patches=1, max_patches=1, **imagenet_norm
        ),
        tokenizer=tok,
        video_processor=tf.InternVLVideoProcessor(size={"height": size, "width": size}, **imagenet_norm),
        image_seq_length=image_seq_length,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    # InternViT-300M's qkv carries a bias
    vision = _vision(tf.InternVLVisionConfig, spec, attention_bias=True, norm_type="layer_norm")
    config = tf.InternVLConfig(
        vision_config=vision,
        text_config=_qwen2_text(tok, spec),
        image_token_id=tok.context_image_token_id,
        image_seq_length=image_seq_length,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec["seed"])
    _save(tf.InternVLForConditionalGeneration(config), processor, out_dir, spec)
