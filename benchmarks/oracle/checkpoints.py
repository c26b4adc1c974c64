"""Tiny random-weight checkpoints of the paper's architectures, written by upstream's own stack (transformers 4.40,
run in .venv-oracle) in the layout their hub repositories had when the paper was run: legacy weight names, a
``preprocessor_config.json``, the real tokenizer files plus each checkpoint's added tokens, and no processor keys of
later revisions. Both stacks load these same files (make oracle; benchmarks/ORACLE.md).

    python checkpoints.py TOKENIZERS_DIR OUT_DIR

TOKENIZERS_DIR holds the real tokenizers fetched at install time (.reference/tokenizers, vlmrepro/data/reference_files.yaml).
Runs under Python 3.10 and transformers 4.40 only: it imports nothing of the project.
"""

import shutil
import sys
from pathlib import Path

import torch
import transformers as tf

SIZE = 32  # image side of the tiny vision towers (336 in the real ones)
PATCH = 8
HIDDEN = 64
LAYERS = 2
NUM_QUERY_TOKENS = 4  # 32 in the real Q-Formers
# the real checkpoints' contexts: Vicuna/Llama-2 4,096, Mistral 32,768, OPT 2,048; the Q-Former's 512
CONTEXT = {"vicuna": 4096, "mistral": 32768, "opt": 2048}
QFORMER_POSITIONS = 512

# The checkpoints of the paper config (config.yaml's hub repos), and what each tokenizer config said then. padding:
# the side the tokenizer config names (None: it names none, so the class default applies).
CHECKPOINTS = {
    "llava-1.5-7b": {"family": "llava", "text": "vicuna", "padding": "left", "repo": "llava-hf/llava-1.5-7b-hf"},
    "llava-v1.6-vicuna-7b": {
        "family": "llava_next",
        "text": "vicuna",
        "padding": "left",
        "repo": "llava-hf/llava-v1.6-vicuna-7b-hf",
    },
    "llava-v1.6-mistral-7b": {
        "family": "llava_next",
        "text": "mistral",
        "padding": "left",
        "repo": "llava-hf/llava-v1.6-mistral-7b-hf",
    },
    "blip2-opt-2.7b": {"family": "blip2", "text": "opt", "padding": "right", "repo": "Salesforce/blip2-opt-2.7b"},
    "instructblip-vicuna-7b": {
        "family": "instructblip",
        "text": "vicuna",
        "padding": None,
        "repo": "Salesforce/instructblip-vicuna-7b",
    },
}


def llama_tokenizer(tokenizers: Path, text: str, padding):
    """The real Llama-2 (Vicuna) or Mistral tokenizer with its checkpoint's ``legacy`` flag: Vicuna-v1.5's config
    sets it false, Mistral-Instruct's true."""
    side = {"padding_side": padding} if padding else {}  # saved in the tokenizer config only when given here
    return tf.LlamaTokenizerFast(
        tokenizer_file=str(tokenizers / ("mistral" if text == "mistral" else "llama2") / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        legacy=text == "mistral",
        add_bos_token=True,
        **side,
    )


def opt_tokenizer(tokenizers: Path, padding):
    """OPT's tokenizer (GPT-2's byte-level BPE; every text starts with </s>), as facebook/opt-2.7b ships it."""
    return tf.GPT2TokenizerFast(
        vocab_file=str(tokenizers / "gpt2" / "vocab.json"),
        merges_file=str(tokenizers / "gpt2" / "merges.txt"),
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos_token=True,
        padding_side=padding,
    )


def bert_tokenizer(tokenizers: Path):
    """bert-base-uncased's WordPiece: the Q-Former's instruction tokenizer."""
    return tf.BertTokenizerFast(vocab_file=str(tokenizers / "bert" / "vocab.txt"), do_lower_case=True)


def vision(cls, **extra):
    return cls(
        hidden_size=HIDDEN // 2,
        intermediate_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        image_size=SIZE,
        patch_size=PATCH,
        **extra,
    )


def llama_config(tok, text: str):
    cls = tf.MistralConfig if text == "mistral" else tf.LlamaConfig
    extra = {"sliding_window": None} if text == "mistral" else {}
    return cls(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2 if text == "mistral" else 4,  # Mistral's grouped-query attention; Llama-2-7B has none
        max_position_embeddings=CONTEXT[text],
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        architectures=["MistralForCausalLM" if text == "mistral" else "LlamaForCausalLM"],
        **extra,
    )


def qformer(cls, **extra):
    return cls(
        hidden_size=HIDDEN // 2,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=HIDDEN,
        encoder_hidden_size=HIDDEN // 2,
        max_position_embeddings=QFORMER_POSITIONS,
        **extra,
    )


def build(name: str, tokenizers: Path, out: Path, seed: int) -> None:
    spec = CHECKPOINTS[name]
    family, text = spec["family"], spec["text"]
    torch.manual_seed(seed)
    if family in ("llava", "llava_next"):
        tok = llama_tokenizer(tokenizers, text, spec["padding"])
        tok.add_tokens(["<image>"], special_tokens=True)  # 32000, as llava-hf adds it
        tok.add_special_tokens({"pad_token": "<pad>"})  # 32001
        image_token = tok.convert_tokens_to_ids("<image>")
        common = dict(
            vision_config=vision(tf.CLIPVisionConfig),
            text_config=llama_config(tok, text),
            image_token_index=image_token,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            pad_token_id=tok.pad_token_id,
        )
        if family == "llava":
            image_processor = tf.CLIPImageProcessor(
                size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
            )
            processor = tf.LlavaProcessor(image_processor=image_processor, tokenizer=tok)
            model = tf.LlavaForConditionalGeneration(tf.LlavaConfig(**common))
        else:
            pinpoints = [[SIZE, SIZE], [SIZE, 2 * SIZE], [2 * SIZE, SIZE], [2 * SIZE, 2 * SIZE], [SIZE, 3 * SIZE]]
            image_processor = tf.LlavaNextImageProcessor(
                size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}, image_grid_pinpoints=pinpoints
            )
            processor = tf.LlavaNextProcessor(image_processor=image_processor, tokenizer=tok)
            model = tf.LlavaNextForConditionalGeneration(tf.LlavaNextConfig(image_grid_pinpoints=pinpoints, **common))
        # llava-hf added <pad> after training, as an initialised row; a zero row (the init of a padding index) would
        # be taken for an image slot by 4.40's merge, which finds those as all-zero embeddings
        with torch.no_grad():
            model.get_input_embeddings().weight[tok.pad_token_id].normal_(0, 0.02)
    elif family == "blip2":
        tok = opt_tokenizer(tokenizers, spec["padding"])
        processor = tf.Blip2Processor(image_processor=tf.BlipImageProcessor(size={"height": SIZE, "width": SIZE}), tokenizer=tok)
        text_config = tf.OPTConfig(
            vocab_size=len(tok) + 7,  # OPT's embedding has 50,272 rows for its 50,265 tokens
            hidden_size=HIDDEN,
            ffn_dim=2 * HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            word_embed_proj_dim=HIDDEN,
            max_position_embeddings=CONTEXT["opt"],
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.convert_tokens_to_ids("Ċ"),  # 50118, "\n": BLIP-2's OPT ends a caption at a newline
            architectures=["OPTForCausalLM"],
        )
        config = tf.Blip2Config(
            vision_config=vision(tf.Blip2VisionConfig).to_dict(),
            qformer_config=qformer(tf.Blip2QFormerConfig).to_dict(),
            text_config=text_config.to_dict(),
            num_query_tokens=NUM_QUERY_TOKENS,
        )
        model = tf.Blip2ForConditionalGeneration(config)
    elif family == "instructblip":
        tok = llama_tokenizer(tokenizers, "vicuna", spec["padding"])
        tok.add_special_tokens({"pad_token": "[PAD]"})  # Salesforce's Vicuna tokenizer pads with an added [PAD]
        qtok = bert_tokenizer(tokenizers)
        processor = tf.InstructBlipProcessor(
            image_processor=tf.BlipImageProcessor(size={"height": SIZE, "width": SIZE}),
            tokenizer=tok,
            qformer_tokenizer=qtok,
        )
        config = tf.InstructBlipConfig(
            vision_config=vision(tf.InstructBlipVisionConfig).to_dict(),
            qformer_config=qformer(tf.InstructBlipQFormerConfig, vocab_size=len(qtok)).to_dict(),
            text_config=llama_config(tok, "vicuna").to_dict(),
            num_query_tokens=NUM_QUERY_TOKENS,
        )
        model = tf.InstructBlipForConditionalGeneration(config)
    else:
        raise ValueError(f"{name}: unknown family {family!r}")
    # parameters a trained checkpoint holds but 4.40's init leaves empty or zero: LLaVA-NeXT's row separator
    # (torch.empty: zeros and garbage; 4.40's cached decoding masks positions whose keys are zero) and the
    # Q-Formers' query tokens
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in ("image_newline", "query_tokens"):
                parameter.normal_(0, 0.02)
    model.eval()
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def main(tokenizers: str, out_dir: str) -> None:
    for seed, name in enumerate(CHECKPOINTS):
        build(name, Path(tokenizers), Path(out_dir) / name, seed)
        print(f"{name}: {Path(out_dir) / name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
