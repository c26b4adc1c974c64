"""Training the demo world's models on a CPU (see ``vlmrepro.demo.world``): a tiny CLIP trained contrastively on the
even corpus, and a tiny LLaVA built as LLaVA-1.5 is — that CLIP's image tower (frozen, converted to Hugging Face
``CLIPVisionModel`` weights), a two-layer MLP projector and a Llama language model — trained on the long-tailed VLM
corpus (plus the language model's own "wiki" knowledge).

* ``train_clip(corpus, image_root, out_dir, spec)``: open_clip hub layout (``open_clip_config.json`` +
  ``open_clip_model.safetensors``), loadable by ``vlmrepro.models.ClipModel``.
* ``clip_to_hf_vision(clip)``: (``CLIPVisionConfig``, state dict) of an open_clip ViT; ``check_vision_conversion``
  compares the hidden states of both.
* ``train_llava(clip_dir, examples, classes, out_dir, spec)``: ``save_pretrained`` model + ``LlavaProcessor``, loadable
  by ``vlmrepro.models.VisionLanguageModel(dir, "llava")``. ``llava_examples`` turns LLaVA-format records into the
  ``{"path", "segments"}`` examples of ``vlmrepro.finetune`` (whose collator encodes them).
* ``train_world_model(train, inputs, out_dir)``: either of them, as a ``models.<name>.train`` entry of the config
  asks, on the world files of the rule's inputs.

Fine-tuning and continued training on an instruction mix use ``vlmrepro.finetune.run`` (the workflow's recipe).
Everything is seeded and runs in float32 on the CPU with PyTorch's deterministic algorithms; the thread count is
the caller's (``train_threads``): it changes the order of float sums, so it is a parameter of the training.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from . import world
from ..download import write_content_revision
from ..finetune import deterministic_algorithms
from ..io import read_json, read_jsonl

CLIP_SPEC = {
    "seed": 0,
    "image_size": 32,
    "patch_size": 16,
    "width": 64,
    "layers": 3,
    "embed_dim": 64,
    "text_width": 64,
    "text_layers": 2,
    "context_length": 16,
    "epochs": 8,
    "batch_size": 64,
    "lr": 2e-3,
    "weight_decay": 0.05,
    "warmup": 20,
    "freeze_token_embedding": True,  # the 49408-row text embedding stays random (an optimiser step over it costs
    # more than the rest of the model); the text transformer learns from the fixed random token vectors
}
LLAVA_SPEC = {
    "seed": 0,
    "hidden": 128,
    "layers": 2,
    "heads": 4,
    "intermediate": 384,
    "max_context": 512,
    "vocab_size": 700,
    "vision_feature_layer": -2,
    "epochs": 8,
    "batch_size": 16,
    "lr": 3e-3,
    "weight_decay": 0.0,
    "warmup": 30,
    "vicuna_share": 0.3,  # examples rendered with the Vicuna v1 system prompt (the fine-tuning recipes' format)
    "wiki_repeats": 4,  # passes over the wiki corpus per epoch
}


# --- CLIP -------------------------------------------------------------------------------------------------------


def clip_model_cfg(spec: dict) -> dict:
    return {
        "embed_dim": spec["embed_dim"],
        "vision_cfg": {
            "image_size": spec["image_size"],
            "layers": spec["layers"],
            "width": spec["width"],
            "head_width": spec["width"] // 2,
            "patch_size": spec["patch_size"],
        },
        "text_cfg": {
            "context_length": spec["context_length"],
            "vocab_size": 49408,
            "width": spec["text_width"],
            "heads": 2,
            "layers": spec["text_layers"],
        },
    }


def _clip_pixels(paths: list[str]) -> torch.Tensor:
    """open_clip's preprocessing of images already at the model's size (resize and crop are identities)."""
    import numpy as np
    import open_clip
    from PIL import Image

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN)[:, None, None]
    std = torch.tensor(open_clip.OPENAI_DATASET_STD)[:, None, None]
    out = []
    for path in paths:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        out.append((torch.from_numpy(arr).permute(2, 0, 1) - mean) / std)
    return torch.stack(out)


def _schedule(optimizer, warmup: int, total: int):
    # linear warmup from lr/warmup, then cosine. Not transformers' get_cosine_schedule_with_warmup: its warmup
    # starts at 0 (step/warmup), one step behind this one, which would change the demo's trained models
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_clip(corpus: list[dict], image_root, out_dir, spec: dict | None = None) -> dict:
    """Contrastive training (symmetric InfoNCE with a learned temperature; pairs of the same ``label`` count as
    positives, UniCL-style) on ``{"image", "caption", "label"}`` records; saves the open_clip hub layout into
    ``out_dir``. Returns the loss curve, steps and training time."""
    import open_clip
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    spec = {**CLIP_SPEC, **(spec or {})}
    start = time.time()
    torch.manual_seed(spec["seed"])
    cfg = clip_model_cfg(spec)
    model = CLIP(**cfg)
    if spec["freeze_token_embedding"]:
        model.token_embedding.weight.requires_grad = False
    pixels = _clip_pixels([str(Path(image_root) / r["image"]) for r in corpus])
    tokens = open_clip.tokenize([r["caption"] for r in corpus], context_length=spec["context_length"])
    # pairs of the same class are positives too (captions of a class differ only in wording): UniCL-style targets
    label_ids = {name: i for i, name in enumerate(sorted({r["label"] for r in corpus}))}
    labels = torch.tensor([label_ids[r["label"]] for r in corpus])
    steps_per_epoch = math.ceil(len(corpus) / spec["batch_size"])
    total = steps_per_epoch * spec["epochs"]
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec["weight_decay"]}, {"params": rest, "weight_decay": 0.0}], lr=spec["lr"]
    )
    scheduler = _schedule(optimizer, spec["warmup"], total)
    generator = torch.Generator().manual_seed(spec["seed"])
    losses = []
    model.train()
    with deterministic_algorithms():
        for _ in range(spec["epochs"]):
            order = torch.randperm(len(corpus), generator=generator)
            for s in range(steps_per_epoch):
                batch = order[s * spec["batch_size"] : (s + 1) * spec["batch_size"]]
                image_f = torch.nn.functional.normalize(model.encode_image(pixels[batch]), dim=-1)
                text_f = torch.nn.functional.normalize(model.encode_text(tokens[batch]), dim=-1)
                logits = model.logit_scale.exp().clamp(max=100) * image_f @ text_f.T
                same = (labels[batch][:, None] == labels[batch][None, :]).float()
                target = same / same.sum(1, keepdim=True)
                loss = 0.5 * (
                    torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.T.log_softmax(1), 1).mean()
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    preprocess_cfg = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess_cfg}, indent=2))
    return {"losses": losses, "seconds": time.time() - start, "steps": total}


def load_open_clip(clip_dir):
    import os

    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{os.path.abspath(clip_dir)}")
    return model.eval()


def clip_to_hf_vision(clip) -> tuple:
    """(``transformers.CLIPVisionConfig``, state dict of ``CLIPVisionModel``) holding the weights of an open_clip
    ViT image tower (``clip.visual``): conv1 → patch_embedding, class/positional embeddings, ln_pre →
    pre_layrnorm, each resblock's in_proj split into q/k/v, out_proj, ln_1/ln_2 → layer_norm1/2, c_fc/c_proj →
    fc1/fc2, ln_post → post_layernorm. open_clip's ``nn.GELU`` is the exact GELU: ``hidden_act="gelu"``."""
    from transformers import CLIPVisionConfig

    visual = clip.visual
    width = visual.conv1.out_channels
    blocks = visual.transformer.resblocks
    heads = blocks[0].attn.num_heads
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=blocks[0].mlp.c_fc.out_features,
        num_hidden_layers=len(blocks),
        num_attention_heads=heads,
        image_size=visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size,
        patch_size=visual.patch_size[0] if isinstance(visual.patch_size, tuple) else visual.patch_size,
        hidden_act="gelu",
        layer_norm_eps=blocks[0].ln_1.eps,
        projection_dim=visual.proj.shape[1] if visual.proj is not None else width,
    )
    sd = {
        "vision_model.embeddings.patch_embedding.weight": visual.conv1.weight,
        "vision_model.embeddings.class_embedding": visual.class_embedding,
        "vision_model.embeddings.position_embedding.weight": visual.positional_embedding,
        "vision_model.pre_layrnorm.weight": visual.ln_pre.weight,
        "vision_model.pre_layrnorm.bias": visual.ln_pre.bias,
        "vision_model.post_layernorm.weight": visual.ln_post.weight,
        "vision_model.post_layernorm.bias": visual.ln_post.bias,
    }
    for i, block in enumerate(blocks):
        p = f"vision_model.encoder.layers.{i}."
        qw, kw, vw = block.attn.in_proj_weight.chunk(3)
        qb, kb, vb = block.attn.in_proj_bias.chunk(3)
        sd.update(
            {
                p + "self_attn.q_proj.weight": qw, p + "self_attn.q_proj.bias": qb,
                p + "self_attn.k_proj.weight": kw, p + "self_attn.k_proj.bias": kb,
                p + "self_attn.v_proj.weight": vw, p + "self_attn.v_proj.bias": vb,
                p + "self_attn.out_proj.weight": block.attn.out_proj.weight,
                p + "self_attn.out_proj.bias": block.attn.out_proj.bias,
                p + "layer_norm1.weight": block.ln_1.weight, p + "layer_norm1.bias": block.ln_1.bias,
                p + "layer_norm2.weight": block.ln_2.weight, p + "layer_norm2.bias": block.ln_2.bias,
                p + "mlp.fc1.weight": block.mlp.c_fc.weight, p + "mlp.fc1.bias": block.mlp.c_fc.bias,
                p + "mlp.fc2.weight": block.mlp.c_proj.weight, p + "mlp.fc2.bias": block.mlp.c_proj.bias,
            }
        )
    return config, {k: v.detach().clone().contiguous() for k, v in sd.items()}


@torch.no_grad()
def check_vision_conversion(clip, hf_vision, pixels: torch.Tensor) -> float:
    """Largest absolute difference between open_clip's and the converted model's hidden states (embeddings after
    ln_pre and the output of every block) on ``pixels``."""
    visual = clip.visual
    x = visual._embeds(pixels)
    ours = [x]
    for block in visual.transformer.resblocks:
        x = block(x)
        ours.append(x)
    theirs = hf_vision(pixel_values=pixels, output_hidden_states=True).hidden_states
    return max(float((a - b).abs().max()) for a, b in zip(ours, theirs))


# --- LLaVA ------------------------------------------------------------------------------------------------------


def build_llava(clip_dir, classes: list[dict], spec: dict | None = None):
    """An untrained LLaVA-1.5-architecture model whose vision tower holds the CLIP image encoder's weights, and
    its ``LlavaProcessor`` (world tokenizer, CLIP preprocessing, the tiny models' chat template). Returns
    (model, processor, conversion error)."""
    import transformers as tf

    from .tiny import LLAVA_CHAT_TEMPLATE

    spec = {**LLAVA_SPEC, **(spec or {})}
    torch.manual_seed(spec["seed"])
    clip = load_open_clip(clip_dir)
    vision_config, vision_sd = clip_to_hf_vision(clip)
    tok = world.world_tokenizer(classes, spec["vocab_size"])
    size, patch = vision_config.image_size, vision_config.patch_size
    text = tf.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec["hidden"],
        intermediate_size=spec["intermediate"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["heads"],
        max_position_embeddings=spec["max_context"],
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = tf.LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=spec["vision_feature_layer"],
        vision_feature_select_strategy="default",
        image_seq_length=(size // patch) ** 2,
    )
    model = tf.LlavaForConditionalGeneration(config)
    tower = model.model.vision_tower
    if not any(k.startswith("vision_model.") for k in tower.state_dict()):  # transformers 5 drops the prefix
        vision_sd = {k.removeprefix("vision_model."): v for k, v in vision_sd.items()}
    missing, unexpected = tower.load_state_dict(vision_sd, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise RuntimeError(f"vision conversion: missing {missing}, unexpected {unexpected}")
    import open_clip

    processor = tf.LlavaProcessor(
        image_processor=tf.CLIPImageProcessor(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_mean=list(open_clip.OPENAI_DATASET_MEAN),
            image_std=list(open_clip.OPENAI_DATASET_STD),
        ),
        tokenizer=tok,
        chat_template=LLAVA_CHAT_TEMPLATE,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    model.generation_config.pad_token_id = tok.pad_token_id
    probe = torch.randn(4, 3, size, size)
    error = check_vision_conversion(clip, model.model.vision_tower, probe)
    return model, processor, error


def record_segments(record: dict, vicuna: bool) -> list[list[str]]:
    """[[prompt, answer], ...] of a LLaVA-format record in the base chat layout ("USER: <image>\\n{q}\\nASSISTANT:",
    as the evaluation templates) or, with ``vicuna``, LLaVA-1.5's Vicuna v1 layout (``instruction_mix``'s, which
    the fine-tuning recipes use)."""
    from ..instruction_mix import conversation_segments

    if vicuna:
        return conversation_segments(record["conversations"], world.SYSTEM)
    turns = record["conversations"]
    return [[f"USER: {turns[i]['value']}\nASSISTANT:", turns[i + 1]["value"]] for i in range(0, len(turns), 2)]


def llava_examples(records: list[dict], image_roots: dict[str, str], vicuna_share: float, seed: int) -> list[dict]:
    """``vlmrepro.finetune`` examples (``{"path", "segments"}``) of LLaVA-format records; each record is rendered
    in the Vicuna layout with probability ``vicuna_share`` (seeded), else in the base layout."""
    rng = random.Random(seed)
    out = []
    for record in records:
        path = None
        if "image" in record:
            source, _, rest = record["image"].partition("/")
            path = str(Path(image_roots[source]) / rest)
        out.append({"path": path, "segments": record_segments(record, rng.random() < vicuna_share)})
    return out


def _encode_examples(processor, examples: list[dict]) -> list[dict]:
    """Each example through ``finetune.make_collator`` once: ids, labels and pixels (or None)."""
    from ..finetune import Conversations, make_collator

    collate = make_collator(processor)
    data = Conversations(examples)
    encoded = []
    for i in range(len(data)):
        batch = collate([data[i]])
        encoded.append(
            {
                "ids": batch["input_ids"][0],
                "labels": batch["labels"][0],
                "pixels": batch["pixel_values"][0] if "pixel_values" in batch else None,
            }
        )
    return encoded


def _batches(encoded: list[dict], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths (sorted within windows of 16 batches) to limit padding."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = 16 * batch_size
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: len(encoded[i]["ids"]))
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(encoded: list[dict], batch: list[int], pad: int) -> dict:
    items = [encoded[i] for i in batch]
    width = max(len(e["ids"]) for e in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for k, e in enumerate(items):
        n = len(e["ids"])
        ids[k, :n], labels[k, :n], mask[k, :n] = e["ids"], e["labels"], 1
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    pixels = [e["pixels"] for e in items if e["pixels"] is not None]
    if pixels:
        out["pixel_values"] = torch.stack(pixels)
    return out


def train_llava(clip_dir, examples: list[dict], classes: list[dict], out_dir, spec: dict | None = None,
                repeated: list[dict] | None = None) -> dict:
    """Build the LLaVA model on ``clip_dir``'s image tower and train projector and language model (vision tower
    frozen) on ``examples`` (``finetune`` format) for ``epochs`` epochs, with ``repeated`` (the wiki corpus)
    added ``wiki_repeats`` times per epoch. One combined stage (LLaVA's stage 1 + 2), AdamW, cosine schedule,
    loss on the answers and their ``</s>``. Saves model + processor into ``out_dir``."""
    spec = {**LLAVA_SPEC, **(spec or {})}
    start = time.time()
    model, processor, error = build_llava(clip_dir, classes, spec)
    processor.tokenizer.padding_side = "right"
    encoded = _encode_examples(processor, examples)
    extra = _encode_examples(processor, repeated or [])
    pool = encoded + extra * spec["wiki_repeats"]
    for p in model.model.vision_tower.parameters():
        p.requires_grad = False
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=spec["lr"], weight_decay=spec["weight_decay"], betas=(0.9, 0.98))
    rng = random.Random(spec["seed"])
    steps_per_epoch = math.ceil(len(pool) / spec["batch_size"])
    total = steps_per_epoch * spec["epochs"]
    scheduler = _schedule(optimizer, spec["warmup"], total)
    pad = processor.tokenizer.pad_token_id
    losses = []
    encode_seconds = time.time() - start
    model.train()
    with deterministic_algorithms():
        for _ in range(spec["epochs"]):
            for batch in _batches(pool, spec["batch_size"], rng):
                loss = model(**_collate(pool, batch, pad)).loss
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained, 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
    model.eval()
    processor.tokenizer.padding_side = "left"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_content_revision(out, "world")
    return {
        "losses": losses,
        "steps": total,
        "seconds": time.time() - start,
        "encode_seconds": encode_seconds,
        "vision_conversion_max_abs_diff": error,
        "n_examples": len(encoded),
        "n_repeated": len(extra),
    }


def train_world_model(train: dict, inputs: Mapping[str, str], out_dir) -> dict:
    """Train the model of a ``models.<name>.train`` entry into ``out_dir`` and return its training log: a CLIP on its
    world's contrastive corpus, or a LLaVA on the image tower of the CLIP in ``inputs["vision"]``, trained on the
    world's VLM corpus with the wiki corpus repeated. ``inputs`` are the world's files (``rules/common.smk:
    world_model_inputs``); the entry's other keys override the training spec."""
    spec = dict(train)
    kind, world_name = spec.pop("kind"), spec.pop("world")
    spec.pop("vision", None)  # the CLIP's model name: its folder is inputs["vision"]
    if kind == "clip":
        return train_clip(read_jsonl(inputs["clip_corpus"]), inputs["images"], out_dir, spec)
    spec = {**LLAVA_SPEC, **spec}
    roots = {world_name: inputs["images"]}  # the corpus's image paths start with the world's name
    examples = llava_examples(read_json(inputs["vlm_corpus"]), roots, spec["vicuna_share"], spec["seed"])
    facts = llava_examples(read_json(inputs["wiki_corpus"]), {}, spec["vicuna_share"], spec["seed"] + 1)
    return train_llava(inputs["vision"], examples, read_json(inputs["classes_full"]), out_dir, spec, repeated=facts)
