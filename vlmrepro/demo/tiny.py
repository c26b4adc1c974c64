"""Tiny random-weight models of every family, built from the real transformers / open_clip classes and saved in
the layout of their hub repositories, so that they load through exactly the code path the paper's models use.
They stand in for the real checkpoints in the embedded demo and the tests (no network, CPU only)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..datasets import COLOURS, SHAPES

# Text the tiny tokenizers are trained on: the prompts of the protocol and the synthetic class vocabulary.
CORPUS = [
    "What type of object is in this photo?",
    "Choose one from",
    "USER: ASSISTANT: Question: Answer: [INST] [/INST]",
    "A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "Let's think step by step. The photo features a",
    "A photo of a",
] + [f"This is a photo of a {c} {s}." for s in SHAPES for c in COLOURS]

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}\n{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% for c in message['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _bpe_vocab(byte_level: bool, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if byte_level:
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<pad>", "</s>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
        )
    bpe.train_from_iterator(CORPUS * 5, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return dict(model["vocab"]), merges


def llama_tokenizer(vocab_size: int = 300):
    """Llama-style (Metaspace BPE with byte fallback, BOS added), as the Vicuna/Mistral checkpoints use."""
    from transformers import LlamaTokenizer

    vocab, merges = _bpe_vocab(byte_level=False, vocab_size=vocab_size)
    for b in range(256):  # byte fallback: every character (newlines included) stays encodable
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    tok = LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        add_prefix_space=True,
        add_bos_token=True,
        padding_side="left",
    )
    tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    return tok


def real_llama_tokenizer(name: str, padding_side: str = "left"):
    """The real Llama-2 (Vicuna) or Mistral tokenizer (fetched at install time, vlmrepro/data/reference_files.yaml) with
    llava-hf's added tokens, <image> and <pad>."""
    from transformers import LlamaTokenizer

    from ..reference_files import tokenizer_dir

    tok = LlamaTokenizer(
        tokenizer_file=str(tokenizer_dir(name) / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side=padding_side,
    )
    tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    return tok


def real_bert_tokenizer():
    """bert-base-uncased's WordPiece: the Q-Former's instruction tokenizer."""
    from transformers import BertTokenizer

    from ..reference_files import tokenizer_dir

    tokens = (tokenizer_dir("bert") / "vocab.txt").read_text().split("\n")[:-1]
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)})


def opt_tokenizer(vocab_size: int = 400, real: bool = False):
    """GPT-2-style byte-level BPE that starts every text with '</s>', as OPT (BLIP-2) does: trained on the protocol's
    prompts, or (``real``) GPT-2's own BPE, whose token boundaries are OPT's (OPT numbers them in another order)."""
    from transformers import GPT2Tokenizer

    if real:
        from ..reference_files import tokenizer_dir

        folder = tokenizer_dir("gpt2")
        vocab = json.loads((folder / "vocab.json").read_text())
        merges = [tuple(line.split(" ")) for line in (folder / "merges.txt").read_text().splitlines()[1:] if line]
    else:
        vocab, merges = _bpe_vocab(byte_level=True, vocab_size=vocab_size)
    return GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        add_bos_token=True,
    )


def _vision(cls, spec, layers: str = "layers", **extra):
    """A tiny ViT config of ``cls`` (``layers``: the spec key of its depth; ``extra``: the architecture's own keys)."""
    return cls(
        hidden_size=spec["vision_width"],
        intermediate_size=2 * spec["vision_width"],
        num_hidden_layers=spec[layers],
        num_attention_heads=2,
        image_size=spec["image_size"],
        patch_size=spec["patch_size"],
        **extra,
    )


def _text(tok, spec, kind: str = "llama"):
    import transformers as tf

    common = dict(
        vocab_size=len(tok),
        hidden_size=spec["hidden"],
        intermediate_size=2 * spec["hidden"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=spec["max_context"],
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if kind == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if kind == "llama":
        return tf.LlamaConfig(**common)
    raise ValueError(f"unknown tiny text model {kind!r}; expected llama or mistral")


DEFAULT_SPEC = {
    "seed": 0,
    "hidden": 64,
    "vision_width": 32,
    "layers": 2,
    "image_size": 32,
    "patch_size": 8,
    "max_context": 512,
    "num_query_tokens": 4,
    "text_model": "llama",
    "padding_side": "left",
    # trained: a small BPE trained on the protocol's prompts (the demo); real: the paper's models' real tokenizers
    "tokenizer": "trained",
}


def build_tiny_vlm(family: str, out_dir, spec: dict | None = None) -> None:
    import transformers as tf

    spec = {**DEFAULT_SPEC, **(spec or {})}
    torch.manual_seed(spec["seed"])
    size = spec["image_size"]
    real = spec["tokenizer"] == "real"
    if spec["tokenizer"] not in ("trained", "real"):
        raise ValueError(f"tiny tokenizer must be trained or real, got {spec['tokenizer']!r}")
    if family in ("llava", "llava_next"):
        tok = real_llama_tokenizer("mistral" if spec["text_model"] == "mistral" else "llama2") if real else llama_tokenizer()
        image_token = tok.convert_tokens_to_ids("<image>")
        vision = _vision(tf.CLIPVisionConfig, spec)
        text = _text(tok, spec, spec["text_model"])
        common = dict(
            patch_size=spec["patch_size"], vision_feature_select_strategy="default", num_additional_image_tokens=1
        )
        if family == "llava":
            processor = tf.LlavaProcessor(
                image_processor=tf.CLIPImageProcessor(
                    size={"shortest_edge": size}, crop_size={"height": size, "width": size}
                ),
                tokenizer=tok,
                chat_template=LLAVA_CHAT_TEMPLATE,
                **common,
            )
            config = tf.LlavaConfig(
                vision_config=vision,
                text_config=text,
                image_token_index=image_token,
                vision_feature_layer=-2,
                vision_feature_select_strategy="default",
                image_seq_length=(size // spec["patch_size"]) ** 2,
            )
            model = tf.LlavaForConditionalGeneration(config)
        else:
            pinpoints = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
            processor = tf.LlavaNextProcessor(
                image_processor=tf.LlavaNextImageProcessor(
                    size={"shortest_edge": size},
                    crop_size={"height": size, "width": size},
                    image_grid_pinpoints=pinpoints,
                ),
                tokenizer=tok,
                chat_template=LLAVA_CHAT_TEMPLATE,
                **common,
            )
            config = tf.LlavaNextConfig(
                vision_config=vision,
                text_config=text,
                image_token_index=image_token,
                image_grid_pinpoints=pinpoints,
                vision_feature_select_strategy="default",
                vision_feature_layer=-2,
            )
            model = tf.LlavaNextForConditionalGeneration(config)
    elif family in ("blip2", "instructblip"):
        image_processor = tf.BlipImageProcessor(size={"height": size, "width": size})
        nq = spec["num_query_tokens"]
        qformer = dict(
            hidden_size=spec["vision_width"],
            num_hidden_layers=spec["layers"],
            num_attention_heads=2,
            intermediate_size=2 * spec["vision_width"],
            encoder_hidden_size=spec["vision_width"],
        )
        if family == "blip2":
            tok = opt_tokenizer(real=real)
            processor = tf.Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=nq)
            text = tf.OPTConfig(
                vocab_size=len(tok),
                hidden_size=spec["hidden"],
                ffn_dim=2 * spec["hidden"],
                num_hidden_layers=spec["layers"],
                num_attention_heads=4,
                word_embed_proj_dim=spec["hidden"],
                max_position_embeddings=spec["max_context"],
                pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
            )
            config = tf.Blip2Config(
                vision_config=_vision(tf.Blip2VisionConfig, spec).to_dict(),
                qformer_config=tf.Blip2QFormerConfig(vocab_size=100, **qformer).to_dict(),
                text_config=text.to_dict(),
                num_query_tokens=nq,
                image_token_index=tok.convert_tokens_to_ids("<image>"),
            )
            model = tf.Blip2ForConditionalGeneration(config)
        else:
            tok = real_llama_tokenizer("llama2") if real else llama_tokenizer()
            words = sorted({w.strip("?.,") for line in CORPUS for w in line.lower().split()} - {""})
            qtok = real_bert_tokenizer() if real else tf.BertTokenizer(
                vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
            )  # fmt: skip
            processor = tf.InstructBlipProcessor(
                image_processor=image_processor, tokenizer=tok, qformer_tokenizer=qtok, num_query_tokens=nq
            )
            config = tf.InstructBlipConfig(
                vision_config=_vision(tf.InstructBlipVisionConfig, spec).to_dict(),
                qformer_config=tf.InstructBlipQFormerConfig(vocab_size=len(qtok), **qformer).to_dict(),
                text_config=_text(tok, spec).to_dict(),
                num_query_tokens=nq,
                image_token_index=tok.convert_tokens_to_ids("<image>"),
            )
            model = tf.InstructBlipForConditionalGeneration(config)
    else:
        raise ValueError(f"no tiny builder for family {family!r}")
    model.eval()
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    processor.tokenizer.padding_side = spec["padding_side"]  # saved in the tokenizer config, as a checkpoint's is
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def build_tiny_clip(out_dir, spec: dict | None = None) -> None:
    """An open_clip ViT saved as ``open_clip_config.json`` + ``open_clip_model.safetensors`` (hub layout); with
    ``spec["siglip"]``, SigLIP-shaped."""
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP
    from safetensors.torch import save_file

    spec = {**DEFAULT_SPEC, **(spec or {})}
    torch.manual_seed(spec["seed"])
    model_cfg = {
        "embed_dim": spec["hidden"] // 2,
        "vision_cfg": {
            "image_size": spec["image_size"],
            "layers": spec["layers"],
            "width": spec["hidden"],
            "head_width": spec["hidden"] // 2,
            "patch_size": spec["patch_size"],
        },
        "text_cfg": {
            "context_length": 32,
            "vocab_size": 49408,
            "width": spec["hidden"] // 2,
            "heads": 2,
            "layers": spec["layers"],
        },
    }
    if spec.get("siglip"):
        # SigLIP's shape (SigLIP2, the modern table): sigmoid-loss logit bias, a text tower without causal mask read
        # at its last token, open_clip's custom-text class
        model_cfg |= {"init_logit_bias": -10.0, "custom_text": True}
        model_cfg["text_cfg"] |= {
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
        }
        model = CustomTextCLIP(**{k: v for k, v in model_cfg.items() if k != "custom_text"})
    else:
        model = CLIP(**model_cfg)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(out_dir) / "open_clip_model.safetensors")
    )
    preprocess_cfg = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    with open(Path(out_dir) / "open_clip_config.json", "w") as handle:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, handle, indent=2)


def build_tiny_llm(out_dir, spec: dict | None = None) -> None:
    """A Vicuna-like language model of the tiny LLaVA's shape (the plain LLM a LoRA fine-tune may be merged onto):
    its tokenizer without the two tokens llava-hf adds (<pad>, <image>), as lmsys/vicuna-7b-v1.5 has 32,000 rows
    to llava-hf's 32,064."""
    import transformers as tf

    spec = {**DEFAULT_SPEC, **(spec or {})}
    torch.manual_seed(spec["seed"])
    tok = llama_tokenizer()
    config = _text(tok, spec)
    config.vocab_size, config.pad_token_id = len(tok) - 2, 0  # vicuna pads with <unk> (id 0)
    model = tf.LlamaForCausalLM(config).eval()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


def build_tiny(family: str, out_dir, spec: dict | None = None) -> None:
    if family == "chat":
        from .chat import build_tiny_chat

        build_tiny_chat(out_dir, spec or {})
    elif family == "open_clip":
        build_tiny_clip(out_dir, spec)
    elif family == "llm":
        build_tiny_llm(out_dir, spec)
    else:
        build_tiny_vlm(family, out_dir, spec)
