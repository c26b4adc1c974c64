"""Tiny random-weight Gemma 3 and SmolVLM2 chat models, built offline from their real transformers classes.

``build_gemma3`` mirrors google/gemma-3-12b-it: ``Gemma3ForConditionalGeneration`` (SigLIP vision tower without
head, average-pooled to ``mm_tokens_per_image`` soft tokens, Gemma 3 text model alternating sliding and full
attention), a ``Gemma3Processor`` with ``Gemma3ImageProcessor`` (square resize, pan-and-scan off) and a Gemma tokenizer
(byte-fallback BPE; <pad>=0, <eos>=1, <bos>=2, <unk>=3, <mask>=4 as in the published vocabulary) whose ``boi_token``,
``eoi_token`` and ``image_token`` name <start_of_image>, <end_of_image> and <image_soft_token>. The chat template is
the published one: a prompt places <start_of_image>, which the processor expands to
``\\n\\n<start_of_image>`` + ``mm_tokens_per_image`` x <image_soft_token> + ``<end_of_image>\\n\\n``.

``build_smolvlm`` mirrors HuggingFaceTB/SmolVLM2-2.2B-Instruct: ``SmolVLMForConditionalGeneration`` (SigLIP-style
vision tower, pixel-shuffle connector with ``scale_factor`` 3, Llama text model), a ``SmolVLMProcessor`` with
``SmolVLMImageProcessor`` (image splitting on, into tiles of the vision tower's size plus a global image, as published)
and ``SmolVLMVideoProcessor``, and a GPT-2 byte-level BPE tokenizer with <|endoftext|>=0, <|im_start|>=1,
<|im_end|>=2 and the multimodal tokens <global-img>, <row_i_col_j>, <fake_token_around_image>, <image>,
<end_of_utterance>. A prompt places one <image> per image, which the processor expands to the tiles' tokens.
SmolVLMProcessor needs the ``num2words`` package (it raises ImportError without it).

Both processors take a batch's images as a nested list, one list per prompt (``images=[[img_a], [img_b]]``): a flat
list of PIL images is read as all the images of a single prompt.

Keys of ``spec`` read (all optional): ``seed`` (0), ``hidden`` (64, text width), ``layers`` (2, text layers),
``vision_width`` (32), ``vision_layers`` (1), ``image_size`` (vision input side: 32 for Gemma 3, 24 for SmolVLM),
``patch_size`` (4), ``vocab_size`` (BPE target before special tokens, 400), ``max_position_embeddings`` (Gemma 3
131072, SmolVLM 8192, as published), ``padding_side`` ("left"); Gemma 3 only: ``mm_tokens_per_image`` (4, a square
whose side divides ``image_size // patch_size``), ``sliding_window`` (1024); SmolVLM only: ``scale_factor`` (3, divides
``image_size // patch_size``), ``do_image_splitting`` (True), ``image_longest_edge`` (2 x ``image_size``: images are
resized to this longest edge, then split into at most 2 x 2 tiles).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..tiny import _bpe_vocab, _vision

# The published google/gemma-3-*-it chat template (system text folded into the first user turn, assistant -> model).
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# The published SmolVLM2 template: a single <|im_start|> opens the conversation, each turn is "Role:" (no space
# before an image, ": " before text) and ends with <end_of_utterance>.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'] is string %}{{': ' + message['content']}}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

GEMMA3_DEFAULTS = {
    "seed": 0,
    "hidden": 64,
    "layers": 2,
    "vision_width": 32,
    "vision_layers": 1,
    "image_size": 32,
    "patch_size": 4,
    "mm_tokens_per_image": 4,
    "sliding_window": 1024,
    "vocab_size": 400,
    "max_position_embeddings": 131_072,
    "padding_side": "left",
}

SMOLVLM_DEFAULTS = {
    "seed": 0,
    "hidden": 64,
    "layers": 2,
    "vision_width": 32,
    "vision_layers": 1,
    "image_size": 24,
    "patch_size": 4,
    "scale_factor": 3,
    "do_image_splitting": True,
    "image_longest_edge": None,  # None: 2 x image_size
    "vocab_size": 400,
    "max_position_embeddings": 8192,
    "padding_side": "left",
}

# SmolVLM's tile position tokens, as many as the published vocabulary has (up to a 6 x 6 grid).
SMOLVLM_GRID = 6


def _vocab_after(specials: list[str], trained: dict[str, int], trained_specials: set[str]) -> dict[str, int]:
    """The published models' special tokens first, at their ids, then the trained pieces in their trained order."""
    vocab = {token: i for i, token in enumerate(specials)}
    for piece, _ in sorted(trained.items(), key=lambda item: item[1]):
        if piece not in trained_specials and piece not in vocab:
            vocab[piece] = len(vocab)
    return vocab


def _gemma3_tokenizer(spec: dict):
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer

    trained, merges = _bpe_vocab(byte_level=False, vocab_size=spec["vocab_size"])
    vocab = _vocab_after(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], trained, {"<unk>", "<s>", "</s>"})
    for b in range(256):  # byte fallback, as Gemma's: newlines and any character stay encodable
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    turn_tokens = ["<start_of_turn>", "<end_of_turn>"]
    image_tokens = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    for token in turn_tokens + list(image_tokens.values()):
        vocab[token] = len(vocab)
    tok = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        padding_side=spec["padding_side"],
        # named, so that tok.boi_token / eoi_token / image_token (and their _id) exist, as Gemma3Processor reads them
        extra_special_tokens=image_tokens,
    )
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in turn_tokens + list(image_tokens.values())])
    return tok


def _smolvlm_tokenizer(spec: dict):
    from tokenizers import AddedToken
    from transformers import GPT2Tokenizer

    trained, merges = _bpe_vocab(byte_level=True, vocab_size=spec["vocab_size"])
    vocab = _vocab_after(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], trained, {"<pad>", "</s>", "<unk>"})
    grid = [f"<row_{r}_col_{c}>" for r in range(1, SMOLVLM_GRID + 1) for c in range(1, SMOLVLM_GRID + 1)]
    named = {
        "global_image_token": "<global-img>",
        "fake_image_token": "<fake_token_around_image>",
        "image_token": "<image>",
        "end_of_utterance_token": "<end_of_utterance>",
    }
    # The published order: <global-img>, the grid, <fake_token_around_image>, <image>, ..., <end_of_utterance> last.
    multimodal = [named["global_image_token"], *grid, named["fake_image_token"], named["image_token"], "<video>"]
    multimodal.append(named["end_of_utterance_token"])
    for token in multimodal:
        vocab[token] = len(vocab)
    tok = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        add_prefix_space=False,
        padding_side=spec["padding_side"],
        model_max_length=spec["max_position_embeddings"],
        extra_special_tokens=named,  # SmolVLMProcessor reads these names (with the same defaults) off the tokenizer
    )
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *multimodal]
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def _save(model, processor, out_dir, eos_token_ids: list[int], pad_token_id: int, bos_token_id: int) -> None:
    model.eval()
    generation = model.generation_config
    generation.bos_token_id, generation.pad_token_id = bos_token_id, pad_token_id
    generation.eos_token_id = eos_token_ids
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def build_gemma3(out_dir, spec: dict) -> None:
    import transformers as tf

    spec = {**GEMMA3_DEFAULTS, **(spec or {})}
    torch.manual_seed(spec["seed"])
    tok = _gemma3_tokenizer(spec)
    size = spec["image_size"]
    # Gemma 3 takes the last hidden states, not SigLIP's pooled head
    vision = _vision(tf.SiglipVisionConfig, spec, layers="vision_layers", vision_use_head=False)
    heads = 4
    head_dim = spec["hidden"] // heads
    text = tf.Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=spec["hidden"],
        intermediate_size=2 * spec["hidden"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=heads,
        num_key_value_heads=2,
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,  # 12B: head_dim 256, scalar 256
        max_position_embeddings=spec["max_position_embeddings"],
        sliding_window=spec["sliding_window"],
        # one layer of each kind (the published 5 sliding : 1 full would give only sliding layers at this depth)
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(spec["layers"])],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    config = tf.Gemma3Config(
        vision_config=vision,
        text_config=text,
        mm_tokens_per_image=spec["mm_tokens_per_image"],
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    model = tf.Gemma3ForConditionalGeneration(config)
    # Gemma 3 initialises the image projection to zeros (a checkpoint overwrites it); random, images reach the logits.
    projection = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        projection.normal_(0.0, config.initializer_range)
    image_processor = tf.Gemma3ImageProcessor(
        size={"height": size, "width": size},
        resample=2,  # bilinear, as published
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    processor = tf.Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=spec["mm_tokens_per_image"],
    )
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    _save(model, processor, out_dir, [tok.eos_token_id, end_of_turn], tok.pad_token_id, tok.bos_token_id)


def build_smolvlm(out_dir, spec: dict) -> None:
    import transformers as tf

    spec = {**SMOLVLM_DEFAULTS, **(spec or {})}
    torch.manual_seed(spec["seed"])
    tok = _smolvlm_tokenizer(spec)
    size, patch, scale = spec["image_size"], spec["patch_size"], spec["scale_factor"]
    side = size // patch
    if side % scale:
        raise ValueError(f"tiny smolvlm: image_size/patch_size ({side}) must be a multiple of scale_factor ({scale})")
    vision = _vision(tf.SmolVLMVisionConfig, spec, layers="vision_layers")
    text = tf.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec["hidden"],
        intermediate_size=2 * spec["hidden"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=4,
        num_key_value_heads=4,  # the published text model has no GQA (32 / 32)
        max_position_embeddings=spec["max_position_embeddings"],
        rope_parameters={"rope_type": "default", "rope_theta": 273_768.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = tf.SmolVLMConfig(
        vision_config=vision,
        text_config=text,
        scale_factor=scale,
        image_token_id=tok.image_token_id,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
    )
    model = tf.SmolVLMForConditionalGeneration(config)
    longest_edge = spec["image_longest_edge"] or 2 * size
    shared = dict(
        size={"longest_edge": longest_edge},
        max_image_size={"longest_edge": size},  # tiles have the vision tower's input size, as published (384)
        resample=1,  # Lanczos, as published
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_processor = tf.SmolVLMImageProcessor(do_image_splitting=spec["do_image_splitting"], **shared)
    video_processor = tf.SmolVLMVideoProcessor(**shared)
    processor = tf.SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        image_seq_len=side * side // (scale * scale),
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    eos = [tok.eos_token_id, tok.pad_token_id]  # <end_of_utterance>, <|im_end|>
    _save(model, processor, out_dir, eos, tok.pad_token_id, tok.bos_token_id)
