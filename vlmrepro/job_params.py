"""The params of each rule's jobs, built from the config: every value that shapes a result reaches its job this way,
so Snakemake reruns a job when one changes (and only then). Plain functions of the config and the job's names, which
tests import without Snakemake; the rules call them from ``rules/*.smk``."""

from __future__ import annotations

from . import registry, versions


def model_source(config: dict, model: str) -> dict:
    """Where a model's weights come from: a hub repo and revision, a local folder, a fine-tune (its whole recipe),
    a demo world's training, or a tiny builder's spec."""
    entry = config["models"][model]
    if "finetuned" in entry:
        return {"finetuned": finetune(config, entry["finetuned"]["recipe"], entry["finetuned"]["dataset"])}
    if "train" in entry:
        world = config["worlds"][entry["train"]["world"]]
        return {"train": entry["train"], "world": world, "trainer": versions.WORLD_TRAINING}
    if "local" in entry:
        return {"local": entry["local"]}
    return hub_source(config, model) if "hub" in entry else {"tiny": entry["tiny"]}


def hub_source(config: dict, model: str) -> dict:
    """A model's hub repo and revision, a date pin as its ISO text (YAML reads an unquoted day as a date)."""
    hub = config["models"][model]["hub"]
    if isinstance(hub["revision"], dict):
        return {**hub, "revision": {"before": str(hub["revision"]["before"])}}
    return hub


def epoch_eval(config: dict, recipe: str, dataset: str) -> dict | None:
    """The evaluation a recipe runs after every epoch (LAVIS's validation; the best epoch is kept), or None."""
    setting = config["finetunes"][recipe]["evaluate_every_epoch"]
    if not setting:
        return None
    run = generation_run(config, registry.finetuned_name(recipe, dataset), setting, dataset)
    return {"setting": setting, "run": run, "rule": config["settings"][setting]["scoring"]}


FINETUNE_KEYS = (
    "trainable", "prompt", "answer", "answer_prefix", "lr", "projector_lr", "global_batch", "per_device_batch",
    "warmup_ratio", "seed", "dtype", "gradient_checkpointing", "save_steps", "schedule", "warmup_steps",
    "warmup_start_lr", "min_lr", "weight_decay", "tf32", "image_aspect_ratio", "group_by_modality_length",
    "image_size", "augment",
)  # fmt: skip


def finetune(config: dict, recipe: str, dataset: str) -> dict:
    ft = config["finetunes"][recipe]
    return {
        **{k: ft[k] for k in FINETUNE_KEYS},
        "base": model_source(config, ft["base"]),
        **image_options(config["models"][ft["base"]]),
        "lora": ft["lora"] if ft["trainable"] == "projector+lora" else None,
        "lora_merge_base": model_source(config, ft["lora_merge_base"]) if ft["lora_merge_base"] else None,
        "epoch_eval": epoch_eval(config, recipe, dataset),
        "epochs": ft["epochs_by_dataset"].get(dataset, ft["epochs"]),
        "data": ft.get("mix") or ft.get("captions") or "classification",
        "protocol": versions.FINETUNE,
    }


def queries(config: dict, setting: str) -> dict:
    s = config["settings"][setting]
    return {
        "seed": config["seed"],
        **{k: s[k] for k in ("question", "candidates", "order", "limit", "shuffle", "question_from")},
        "protocol": versions.QUERIES,
    }


def generation(config: dict, model: str, setting: str, dataset: str) -> dict:
    return {"source": model_source(config, model), **generation_run(config, model, setting, dataset)}


def generation_run(config: dict, model: str, setting: str, dataset: str) -> dict:
    """How a model generates for a setting (everything but the weights' provenance): the generation rule's params,
    and a fine-tune's evaluation after every epoch."""
    m, s = config["models"][model], config["settings"][setting]
    return {
        "family": m["family"],
        "template": m["cot_template"] if s["chain_of_thought"] else m["template"],
        "answer_marker": m["answer_marker"],
        "answer_from": m["answer_from"],
        "model": model,
        "backend": m["backend"],
        "attention": m["attention"],
        "kv_cache": m["kv_cache"],
        "dtype": m["dtype"],
        "image_aspect_ratio": m["image_aspect_ratio"],
        **image_options(m),
        **generation_batching(m, s, dataset),
        "loader_workers": m["loader_workers"],
        "max_new_tokens": s["max_new_tokens"],
        "min_new_tokens": s["min_new_tokens"],
        "device": config["device"],
        "protocol": versions.GENERATION,
        **model_options(m),
    }


def image_options(m: dict) -> dict:
    """How a model's jobs preprocess images: the image processor's implementation (models.<m>.image_backend) and,
    for LLaVA-NeXT, how its tiles are padded (models.<m>.anyres_padding)."""
    options = {"image_backend": registry.image_backend(m["family"], m.get("image_backend"))}
    return options | ({"anyres_padding": m["anyres_padding"]} if m["family"] == "llava_next" else {})


def model_options(m: dict) -> dict:
    """Per-model options of the chat family, in a job's params only where set (other models' params, and so their
    results, stay as they were)."""
    options = {"trust_remote_code": True} if m["trust_remote_code"] else {}
    return options | ({"reasoning_tags": m["reasoning_tags"]} if m["reasoning_tags"] else {})


def generation_batching(m: dict, s: dict, dataset: str) -> dict:
    """How a generation job pads and forms its batches (docs/protocol.md#precision-batching-and-padding).

    upstream: the checkpoint's own padding side and upstream's batch size, fixed blocks in plan order (with right
    padding an answer depends on its batch-mates, so only upstream's batches give upstream's answers); fast: left
    padding, the configured (auto) batch size, batches formed in sorted blocks. A setting may force either mode."""
    mode = s["batching"] or m["batching"]
    if mode == "upstream":
        # a setting's smaller batches (StanfordCars at 4) never raise a model's (LLaVA-NeXT ran one item at a time)
        size = min(s["upstream_batch_size_by_dataset"].get(dataset, m["upstream_batch_size"]), m["upstream_batch_size"])
        return {"batching": mode, "padding_side": "checkpoint", "batch_size": size, "max_batch_size": size,
                "sort_block": size}  # fmt: skip
    return {
        "batching": mode,
        "padding_side": "left",
        "batch_size": m["batch_size"],
        "max_batch_size": m["max_batch_size"],
        "sort_block": generation_sort_block(m),
    }


def generation_sort_block(m: dict) -> int:
    """Consecutive items whose batches are formed together (sorted by prompt length when larger than a batch);
    shards are whole blocks, so a result does not depend on the shard count."""
    if m["sort_block"]:
        return m["sort_block"]
    return m["max_batch_size"] if m["batch_size"] == "auto" else m["batch_size"]


def clip(config: dict, model: str, setting: str) -> dict:
    m, s = config["models"][model], config["settings"][setting]
    return {
        "source": model_source(config, model),
        "text_template": s["text_template"],
        "dtype": m["dtype"],
        "batch_size": m["max_batch_size"] if m["batch_size"] == "auto" else m["batch_size"],
        "loader_workers": m["loader_workers"],
        "device": config["device"],
        "protocol": versions.CLIP,
    }


def loglik(config: dict, model: str, setting: str) -> dict:
    m, s = config["models"][model], config["settings"][setting]
    return {
        "family": m["family"],
        "source": model_source(config, model),
        **m["loglik"],
        "question": s["question"],
        "text_prior": s["cfg_mode"] == "paper",
        "dtype": m["dtype"],
        **image_options(m),
        # packed class scoring needs an attention mask per token: FlashAttention 2 takes none
        "attention": "sdpa",
        # every prompt must end at the last position (scores read there)
        "padding_side": "left",
        "device": config["device"],
        "protocol": versions.LOGLIK,
        **model_options(m),
    }


def loglik_scoring(config: dict, setting: str) -> dict:
    s = config["settings"][setting]
    return {"alphas": s["cfg_alphas"], "text_prior": s["cfg_mode"] == "paper", "protocol": versions.LOGLIK_SCORING}


def features(config: dict, model: str, setting: str) -> dict:
    m, s = config["models"][model], config["settings"][setting]
    return {
        "family": m["family"],
        "source": model_source(config, model),
        "template": m.get("template", ""),
        "question": s["question"],
        "positions": s["positions"] if s["kind"] == "features" else ["embedding"],
        "dtype": m["dtype"],
        **image_options(m),
        "batch_size": s["batch_size"] or m["batch_size"],
        "shard_size": s["shard_size"],
        # a dataset's prompts are identical, so nothing is padded; left keeps position -1 the last token regardless
        "padding_side": "left",
        "device": config["device"],
        "protocol": versions.FEATURES,
        **model_options(m),
    }


PROBE_KEYS = ("position", "lr", "probe_batch_size", "probe_seed", "reshuffle", "normalize", "labels", "fp16_init")


def probe(config: dict, setting: str, dataset: str) -> dict:
    s = config["settings"][setting]
    return {
        **{k: s[k] for k in PROBE_KEYS},
        "heldout_fraction": s["heldout_fraction"],
        "epochs": s["epochs_by_dataset"].get(dataset, s["epochs"]),
        "eval_split": config["datasets"][dataset]["eval_split"],
        "protocol": versions.PROBE,
    }


def api(config: dict, model: str, setting: str) -> dict:
    m, s = config["models"][model], config["settings"][setting]
    return {
        **m["api"],
        "template": m["cot_template"] if s["chain_of_thought"] else m["template"],
        **{k: config["api"][k] for k in ("concurrency", "max_attempts", "calls_per_item", "data_limit")},
        "protocol": versions.API,
    }


def benchmark(config: dict, model: str, dataset: str, setting: str) -> dict:
    m = config["models"][model]
    return {
        **config["datasets"][dataset]["benchmark"],
        **config["settings"][setting]["harness"],
        "family": m["family"],
        "source": model_source(config, model),
        "dtype": m["dtype"],
        "protocol": versions.BENCHMARK,
    }


def mcq(config: dict, setting: str) -> dict | None:
    """Multiple-choice parsing: the evaluation RNG seed."""
    s = config["settings"][setting]
    return {"seed": s["mcq_seed"]} if s["scoring"] == "mcq" else None
