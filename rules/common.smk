# Helpers shared by every stage: configuration checks, registries split by kind, input and params functions.
import os
import re
from types import SimpleNamespace

from snakemake.utils import validate

from vlmrepro import cluster, findings, jobs, registry, versions
from vlmrepro.api import missing_key, retry_state_path, retry_token
from vlmrepro.config import check_config, check_config_size
from vlmrepro.io import folder_state

check_config_size(config)  # before the schema check, which would expand nested YAML aliases
validate(config, "../schemas/config.schema.yaml")
check_config(config)

NO_MATCH = "(?!x)x"  # wildcard constraint that matches nothing (an empty registry)


def one_of(keys):
    return "|".join(re.escape(k) for k in keys) or NO_MATCH


DATASETS = config["datasets"]
MODELS = config["models"]
SETTINGS = config["settings"]
FINETUNES = config["finetunes"]

# every fine-tuning recipe x dataset becomes a model of the registry, evaluated by the ordinary rules
FINETUNED_MODELS = registry.finetuned_models(config)
for _name, _entry in FINETUNED_MODELS.items():
    _recipe, _dataset, _ft = _entry["recipe"], _entry["dataset"], FINETUNES[_entry["recipe"]]
    MODELS[_name] = {
        **MODELS[_ft["base"]],
        "paper_name": _ft["paper_name"],
        "template": _ft["template"],
        "answer_marker": _ft["answer_marker"],
        # the LLaVA code base's model_vqa (and LAVIS) return the generation alone, and it is scored whole
        "answer_from": "generation",
        # evaluated on images prepared as in training (LLaVA's model_vqa pads them to a square too)
        "image_aspect_ratio": _ft["image_aspect_ratio"],
        # model_vqa (LLaVA) ran one item at a time and LAVIS's caption prompt is the same for every item:
        # nothing was padded, so left padding and sorted batches give upstream's answers
        "batching": "fast",
        "score_resplit": None,
        "cot_template": _ft["cot_template"],
        "gpus": min(MODELS[_ft["base"]]["gpus"], 1),
        "finetuned": {"recipe": _recipe, "dataset": _dataset},
    }

# the model families and setting kinds are defined in vlmrepro/registry.py
BASELINE_MODELS = registry.models_of_family(MODELS, registry.BASELINE_FAMILIES)
API_MODELS = registry.models_of_family(MODELS, registry.API_FAMILIES)
VLM_MODELS = registry.vlm_models(MODELS)
CLIP_MODELS = registry.models_of_family(MODELS, registry.CLIP_FAMILIES)
HUB_MODELS = [k for k, m in MODELS.items() if "hub" in m and k not in FINETUNED_MODELS]
# checkpoints already on disk (models.<m>.local), linked into models/
LOCAL_MODELS = [k for k, m in MODELS.items() if "local" in m and k not in FINETUNED_MODELS]
# demo models trained in a synthetic world (worlds.<name>) by their own jobs; a CLIP, and a LLaVA on its tower
TRAINED_MODELS = [k for k, m in MODELS.items() if "train" in m and k not in FINETUNED_MODELS]
WORLDS = config["worlds"]
# what vlmrepro.demo.world.build_world writes beside images/ (see its docstring)
WORLD_FILES = ["classes.json", "classes_full.json", "manifest.jsonl", "wikiqa.jsonl", "clip_corpus.jsonl"]
WORLD_FILES += ["vlm_corpus.json", "wiki_corpus.json", "counts.json", "world.json"]
API = config["api"]
TINY_MODELS = [k for k, m in MODELS.items() if "tiny" in m and k not in FINETUNED_MODELS]
GENERATE_SETTINGS = registry.settings_of_kind(SETTINGS, ("generate",))
CLIP_SETTINGS = registry.settings_of_kind(SETTINGS, ("clip",))
LOGLIK_SETTINGS = registry.settings_of_kind(SETTINGS, ("loglik",))
FEATURE_SETTINGS = registry.settings_of_kind(SETTINGS, registry.FEATURE_KINDS)
PROBE_SETTINGS = registry.settings_of_kind(SETTINGS, ("probe",))
FREQUENCY_SETTINGS = registry.settings_of_kind(SETTINGS, ("frequency",))
CORPORA = config["corpora"]
WORLD_DATASETS = [k for k, d in DATASETS.items() if "world" in d]
MCQ_DATASETS = [k for k, d in DATASETS.items() if "mcq" in d]  # ImageWikiQA-style multiple-choice sets
RESCORE_SETTINGS = registry.settings_of_kind(SETTINGS, ("rescore",))
BENCHMARK_SETTINGS = registry.settings_of_kind(SETTINGS, ("benchmark",))
ROBUSTNESS_SETTINGS = registry.settings_of_kind(SETTINGS, ("robustness",))
BENCHMARK_DATASETS = [k for k, d in DATASETS.items() if "benchmark" in d]  # evaluated by an external harness
CLASSIFICATION_DATASETS = [k for k in DATASETS if k not in MCQ_DATASETS + BENCHMARK_DATASETS]
BUILT_DATASETS = [k for k, d in DATASETS.items() if d.get("manifest", {}).get("build")]
ARCHIVE_DATASETS = [k for k, d in DATASETS.items() if "archive" in d.get("images", {})]


# --- datasets -------------------------------------------------------------------------------------------------


def manifest_file(wildcards):
    return registry.dataset_file(DATASETS, wildcards.dataset, "manifest")


def raw_classes_file(wildcards):
    return registry.dataset_file(DATASETS, wildcards.dataset, "classes")


def world_of(dataset):
    return DATASETS[dataset]["world"]["name"]


def upstream_source(wildcards):
    """url + checksum of resources/upstream/<dataset>/<file>."""
    section = {
        "manifest.jsonl": "manifest",
        "classes.json": "classes",
        "questions.jsonl": "mcq",
        "synonyms.txt": "synonyms",
    }[wildcards.file]
    entry = DATASETS[wildcards.dataset][section]
    return {"url": entry["url"], "checksum": entry["checksum"]}


def mcq_questions_file(wildcards):
    return registry.questions_file(DATASETS, wildcards.dataset)


def image_root(dataset):
    return registry.image_root(DATASETS, dataset)


def image_prefix(dataset):
    return registry.image_prefix(DATASETS, dataset)


def image_inputs(wildcards, dataset=None):
    """Images made by a rule are inputs; a user directory is checked when the job runs (so planning works
    before the licence-gated images are in place)."""
    ds = dataset or wildcards.dataset
    if ds in MCQ_DATASETS:
        return image_inputs(wildcards, DATASETS[ds]["mcq"]["images_from"])
    if ds in ARCHIVE_DATASETS or ds in WORLD_DATASETS:
        return [image_root(ds)]
    return []


def image_folder_state(wildcards, dataset=None):
    """The fingerprint of a user image folder, a param of its splits' preparation: an image replaced in place
    reruns it. Folders a rule makes are its outputs, which Snakemake tracks itself."""
    ds = dataset or wildcards.dataset
    if ds in MCQ_DATASETS:
        return image_folder_state(wildcards, DATASETS[ds]["mcq"]["images_from"])
    if ds in ARCHIVE_DATASETS or ds in WORLD_DATASETS or not config["image_change_threads"]:
        return ""
    return folder_state(image_root(ds), config["image_change_threads"])


def on_bad_image(wildcards):
    """Multiple-choice sets report rows whose image is missing by count (their images come from another set)."""
    return "skip" if wildcards.dataset in MCQ_DATASETS else config["on_bad_image"]


def planned_split_of(dataset):
    return f"results/data/{dataset}/{DATASETS[dataset]['eval_split']}.jsonl"


def planned_split_file(wildcards):
    ds, setting = wildcards.dataset, SETTINGS[wildcards.setting]
    split = DATASETS[ds]["eval_split"] if setting["split"] == "eval" else setting["split"]
    return f"results/data/{ds}/{split}.jsonl"


# --- models and settings --------------------------------------------------------------------------------------


SHARD = r"\d+-of-\d+"


def parse_shard(shard):
    index, count = shard.split("-of-")
    return int(index), int(count)


def shard_files(wildcards, suffix, root="results/shards"):
    """Every shard of one output, in order; ``suffix`` None for folders. Generation takes the dataset's shard count,
    feature extraction and probabilistic inference their setting's (most datasets fit one job)."""
    setting = SETTINGS[wildcards.setting]
    if setting["kind"] in ("features", "clip_features", "loglik"):
        count = setting["shards_by_dataset"].get(wildcards.dataset, 1)
    else:
        count = DATASETS[wildcards.dataset]["shards"]
    folder = f"{root}/{wildcards.model}/{wildcards.dataset}/{wildcards.setting}"
    return [f"{folder}/{i}-of-{count}" + (f".{suffix}" if suffix else "") for i in range(count)]


def model_revision_param(model):
    entry = MODELS[model]
    if "finetuned" in entry:
        return {"finetuned": finetune_params(entry["finetuned"]["recipe"], entry["finetuned"]["dataset"])}
    if "train" in entry:
        return {"train": entry["train"], "world": WORLDS[entry["train"]["world"]], "trainer": versions.WORLD_TRAINING}
    if "local" in entry:
        return {"local": entry["local"]}
    return hub_source(model) if "hub" in entry else {"tiny": entry["tiny"]}


def hub_source(model):
    """A model's hub repo and revision, a date pin as its ISO text (YAML reads an unquoted day as a date)."""
    hub = MODELS[model]["hub"]
    if isinstance(hub["revision"], dict):
        return {**hub, "revision": {"before": str(hub["revision"]["before"])}}
    return hub


def local_model_files(wildcards):
    """Every file of a local checkpoint: Snakemake relinks the model (and reruns what it made) when one changes."""
    return registry.local_checkpoint_files(MODELS[wildcards.model]["local"]["path"])


def score_extra_inputs(wildcards):
    """What joins a score besides its rows: a fine-tune's per-epoch accuracies (evaluated after every epoch on
    this setting), a CLIP job's class prompts cut at the text context (its meta file)."""
    entry = FINETUNED_MODELS.get(wildcards.model)
    if entry and FINETUNES[entry["recipe"]]["evaluate_every_epoch"] == wildcards.setting:
        return {"epochs": f"results/finetune/{wildcards.model}/losses.json"}
    if wildcards.model in CLIP_MODELS:
        return {"meta": f"results/outputs/{wildcards.model}/{wildcards.dataset}/{wildcards.setting}.meta.json"}
    return {}


def epoch_eval_params(recipe, dataset):
    """The evaluation a recipe runs after every epoch (LAVIS's validation; the best epoch is kept), or None."""
    setting = FINETUNES[recipe]["evaluate_every_epoch"]
    if not setting:
        return None
    run = generation_run(f"{recipe}-{dataset}", setting, dataset)
    return {"setting": setting, "run": run, "rule": SETTINGS[setting]["scoring"]}


def finetune_params(recipe, dataset):
    ft = FINETUNES[recipe]
    keys = ("trainable", "prompt", "answer", "answer_prefix", "lr", "projector_lr", "global_batch")
    keys += ("per_device_batch", "warmup_ratio", "seed", "dtype", "gradient_checkpointing", "save_steps")
    keys += ("schedule", "warmup_steps", "warmup_start_lr", "min_lr", "weight_decay", "tf32", "image_aspect_ratio")
    keys += ("group_by_modality_length", "image_size", "augment")
    return {
        **{k: ft[k] for k in keys},
        "base": model_revision_param(ft["base"]),
        **image_options(MODELS[ft["base"]]),
        "lora": ft["lora"] if ft["trainable"] == "projector+lora" else None,
        "lora_merge_base": model_revision_param(ft["lora_merge_base"]) if ft["lora_merge_base"] else None,
        "epoch_eval": epoch_eval_params(recipe, dataset),
        "epochs": ft["epochs_by_dataset"].get(dataset, ft["epochs"]),
        "data": ft.get("mix") or ft.get("captions") or "classification",
        "protocol": versions.FINETUNE,
    }


def synonym_inputs(wildcards):
    inputs = {"classes": f"results/data/{wildcards.dataset}/classes.json"}
    if wildcards.dataset in WORLD_DATASETS:  # a world class also answers to its family name ("gem")
        inputs["world"] = f"resources/world/{world_of(wildcards.dataset)}/classes_full.json"
    return inputs


def world_model_inputs(wildcards):
    """The world a model trains in, and for a LLaVA the CLIP whose image tower it takes."""
    train = MODELS[wildcards.model]["train"]
    world = f"resources/world/{train['world']}"
    inputs = {"images": f"{world}/images"}
    inputs.update({f.split(".")[0]: f"{world}/{f}" for f in WORLD_FILES})
    if train["kind"] == "llava":
        inputs["vision"] = f"models/{train['vision']}"
    return inputs


def finetune_inputs(wildcards):
    """Training data: the planned classification items, an instruction mix built from them, or captions of the
    training images written by a captioning model (API or local)."""
    entry = FINETUNED_MODELS[wildcards.model]
    recipe = FINETUNES[entry["recipe"]]
    inputs = {"base": f"models/{recipe['base']}"}
    if recipe["evaluate_every_epoch"]:
        inputs["eval_queries"] = f"results/queries/{entry['dataset']}/{recipe['evaluate_every_epoch']}.jsonl"
    if recipe["lora_merge_base"]:
        inputs["merge_base"] = f"models/{recipe['lora_merge_base']}"
    if "mix" in recipe:
        inputs["mix"] = f"results/finetune/{wildcards.model}/mix.jsonl"
    elif "captions" in recipe:
        captions = recipe["captions"]
        inputs["queries"] = f"results/queries/{entry['dataset']}/{captions['setting']}.jsonl"
        inputs["captions"] = f"results/outputs/{captions['model']}/{entry['dataset']}/{captions['setting']}.jsonl"
    else:
        inputs["queries"] = f"results/queries/{entry['dataset']}/{recipe['train_setting']}.jsonl"
    return inputs


def instruction_mix_inputs(wildcards):
    entry = FINETUNED_MODELS[wildcards.model]
    recipe = FINETUNES[entry["recipe"]]
    return {
        "queries": f"results/queries/{entry['dataset']}/{recipe['train_setting']}.jsonl",
        "corpus": f"resources/corpora/{recipe['mix']['corpus']}.json",
    }


def query_params(wildcards):
    s = SETTINGS[wildcards.setting]
    return {
        "seed": config["seed"],
        "question": s["question"],
        "candidates": s["candidates"],
        "order": s["order"],
        "limit": s["limit"],
        "shuffle": s["shuffle"],
        "question_from": s["question_from"],
        "protocol": versions.QUERIES,
    }


def generation_params(wildcards):
    return {
        "source": model_revision_param(wildcards.model),
        **generation_run(wildcards.model, wildcards.setting, wildcards.dataset),
    }


def generation_run(model, setting, dataset):
    """How a model generates for a setting (everything but the weights' provenance): the generation rule's params,
    and a fine-tune's evaluation after every epoch."""
    m, s = MODELS[model], SETTINGS[setting]
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


def image_options(m):
    """How a model's jobs preprocess images: the image processor's implementation (models.<m>.image_backend) and,
    for LLaVA-NeXT, how its tiles are padded (models.<m>.anyres_padding)."""
    options = {"image_backend": registry.image_backend(m["family"], m.get("image_backend"))}
    return options | ({"anyres_padding": m["anyres_padding"]} if m["family"] == "llava_next" else {})


def model_options(m):
    """Per-model options of the chat family, in a job's params only where set (other models' params, and so their
    results, stay as they were)."""
    options = {"trust_remote_code": True} if m["trust_remote_code"] else {}
    return options | ({"reasoning_tags": m["reasoning_tags"]} if m["reasoning_tags"] else {})


def generation_batching(m, s, dataset):
    """How a generation job pads and forms its batches (docs/protocol.md#precision-batching-and-padding).

    upstream: the checkpoint's own padding side and upstream's batch size, fixed blocks in plan order (with right
    padding an answer depends on its batch-mates, so only upstream's batches give upstream's answers); fast: left
    padding, the configured (auto) batch size, batches formed in sorted blocks. A setting may force either mode."""
    mode = s["batching"] or m["batching"]
    if mode == "upstream":
        # a setting's smaller batches (StanfordCars at 4) never raise a model's (LLaVA-NeXT ran one item at a time)
        size = min(s["upstream_batch_size_by_dataset"].get(dataset, m["upstream_batch_size"]), m["upstream_batch_size"])
        return {
            "batching": mode,
            "padding_side": "checkpoint",
            "batch_size": size,
            "max_batch_size": size,
            "sort_block": size,
        }
    return {
        "batching": mode,
        "padding_side": "left",
        "batch_size": m["batch_size"],
        "max_batch_size": m["max_batch_size"],
        "sort_block": generation_sort_block(m),
    }


def generation_sort_block(m):
    """Consecutive items whose batches are formed together (sorted by prompt length when larger than a batch);
    shards are whole blocks, so a result does not depend on the shard count."""
    if m["sort_block"]:
        return m["sort_block"]
    return m["max_batch_size"] if m["batch_size"] == "auto" else m["batch_size"]


def clip_params(wildcards):
    m, s = MODELS[wildcards.model], SETTINGS[wildcards.setting]
    return {
        "source": model_revision_param(wildcards.model),
        "text_template": s["text_template"],
        "dtype": m["dtype"],
        "batch_size": m["max_batch_size"] if m["batch_size"] == "auto" else m["batch_size"],
        "loader_workers": m["loader_workers"],
        "device": config["device"],
        "protocol": versions.CLIP,
    }


def loglik_params(wildcards):
    m, s = MODELS[wildcards.model], SETTINGS[wildcards.setting]
    return {
        "family": m["family"],
        "source": model_revision_param(wildcards.model),
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


def loglik_scoring_params(wildcards):
    s = SETTINGS[wildcards.setting]
    return {
        "alphas": s["cfg_alphas"],
        "text_prior": s["cfg_mode"] == "paper",
        "protocol": versions.LOGLIK_SCORING,
    }


def feature_params(wildcards):
    m, s = MODELS[wildcards.model], SETTINGS[wildcards.setting]
    return {
        "family": m["family"],
        "source": model_revision_param(wildcards.model),
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


def probe_features_dir(wildcards):
    source = SETTINGS[wildcards.setting]["features"]
    return f"results/features/{wildcards.model}/{wildcards.dataset}/{source}"


def probe_params(wildcards):
    s = SETTINGS[wildcards.setting]
    keys = ("position", "lr", "probe_batch_size", "probe_seed", "reshuffle", "normalize", "labels", "fp16_init")
    return {
        **{k: s[k] for k in keys},
        "heldout_fraction": s["heldout_fraction"],
        "epochs": s["epochs_by_dataset"].get(wildcards.dataset, s["epochs"]),
        "eval_split": DATASETS[wildcards.dataset]["eval_split"],
        "protocol": versions.PROBE,
    }


def corpus_counts(wildcards):
    return {c: f"results/frequency/{c}/{wildcards.dataset}.json" for c in CORPORA}


def frequency_source(wildcards):
    """Per-item predictions: a setting's raw outputs, or a probe's score file (its best-epoch predictions)."""
    source = SETTINGS[wildcards.setting]["source"]
    folder = "scores" if SETTINGS[source]["kind"] == "probe" else "outputs"
    suffix = "json" if folder == "scores" else "jsonl"
    return f"results/{folder}/{wildcards.model}/{wildcards.dataset}/{source}.{suffix}"


def cut_finetuned_labels(wildcards):
    """Fine-tuned outputs outside ImageNet had their labels cut at the first hyphen upstream
    (docs/protocol.md#correlation-and-bins)."""
    setting = SETTINGS[wildcards.setting]
    return setting["label_parse"] == "upstream_finetuned" and DATASETS[wildcards.dataset]["paper_key"] != "imagenet"


def api_params(wildcards):
    m, s = MODELS[wildcards.model], SETTINGS[wildcards.setting]
    return {
        **m["api"],
        "template": m["cot_template"] if s["chain_of_thought"] else m["template"],
        "concurrency": API["concurrency"],
        "max_attempts": API["max_attempts"],
        "calls_per_item": API["calls_per_item"],
        "data_limit": API["data_limit"],
        "protocol": versions.API,
    }


def api_retry(wildcards):
    """Changes while the job's last run left api_error items, which the next run then asks again."""
    return retry_token(retry_state_path(wildcards.model, wildcards.dataset, wildcards.setting))


def benchmark_params(wildcards):
    m, bench = MODELS[wildcards.model], DATASETS[wildcards.dataset]["benchmark"]
    return {
        **bench,
        **SETTINGS[wildcards.setting]["harness"],
        "family": m["family"],
        "source": model_revision_param(wildcards.model),
        "dtype": m["dtype"],
        "protocol": versions.BENCHMARK,
    }


def baseline_inputs(wildcards):
    """Dataset statistics read every manifest row; the multiple-choice baselines read the evaluated questions."""
    if MODELS[wildcards.model]["baseline"] == "dataset_statistics":
        return {
            "rows": f"results/data/{wildcards.dataset}/all.jsonl",
            "classes": f"results/data/{wildcards.dataset}/classes.json",
        }
    return {"rows": planned_split_of(wildcards.dataset)}


def source_wildcards(wildcards):
    """The wildcards of the setting a check or rescoring reads (its ``source``)."""
    return SimpleNamespace(
        model=wildcards.model, dataset=wildcards.dataset, setting=SETTINGS[wildcards.setting]["source"]
    )


def mcq_params(wildcards):
    """Multiple-choice parsing: the evaluation RNG seed."""
    s = SETTINGS[wildcards.setting]
    if s["scoring"] != "mcq":
        return None
    return {"seed": s["mcq_seed"]}


def synonyms_file(wildcards):
    if not DATASETS[wildcards.dataset].get("synonyms"):
        raise ValueError(f"setting {wildcards.setting!r} needs datasets.{wildcards.dataset}.synonyms in the config")
    return registry.synonyms_file(DATASETS, wildcards.dataset)


def compute_resources(rule_name):
    """What a compute rule's job asks a cluster for: CPUs, memory, runtime, and a GPU only where one is used
    (resources and cluster in the config; vlmrepro.cluster)."""
    return cluster.snakemake_resources(config, rule_name)


# --- tables ---------------------------------------------------------------------------------------------------

# tables marked on_request (current models beyond the paper) are planned only when requested
TABLES = {k: t for k, t in config["tables"].items() if not t["on_request"] or k in config["requested_tables"]}
FINDINGS = [f for f in config["report"]["findings"] if "table" not in f or f["table"] in TABLES]


def api_model_of(model):
    """The API model a cell depends on (itself, or the one that wrote a caption fine-tune's captions), or None."""
    if MODELS[model]["family"] == "api":
        return model
    recipe = FINETUNES.get(FINETUNED_MODELS.get(model, {}).get("recipe"), {})
    return api_model_of(recipe["captions"]["model"]) if "captions" in recipe else None


def api_not_run(model):
    """Why a cell that needs an API model is not run, or None when it runs. api.enabled auto runs a provider's
    cells when its key variable is set, so a run without keys finishes everything else."""
    api_model = api_model_of(model)
    if api_model is None or API["enabled"] is True:
        return None
    if API["enabled"] is False:
        return "not run: proprietary API models are switched off for this run (api.enabled: false)"
    variable = missing_key(MODELS[api_model]["api"]["provider"])
    return f"not run: {variable} is not set (the key of {MODELS[api_model]['paper_name']})" if variable else None


def exclusion_reason(rules, cell):
    """The reason of the first exclusion rule matching the cell, or None."""
    for exclusion in rules:
        if all(cell[k] == v for k, v in exclusion.items() if k != "reason"):
            return exclusion["reason"]
    return None


def table_cells(table):
    """Every (model, dataset, setting) cell of a table with its paper names; excluded cells carry the reason."""
    spec = TABLES[table]
    cells = []
    for group in spec["groups"]:
        for model in group["models"]:
            for dataset in group["datasets"]:
                # a fine-tuning recipe stands for its model trained on the cell's dataset
                key = f"{model}-{dataset}" if model in FINETUNES else model
                for column in group["columns"]:
                    cell = {
                        "model": key,
                        "paper_model": MODELS[key]["paper_name"],
                        "dataset": dataset,
                        "paper_dataset": DATASETS[dataset]["paper_key"],
                        "setting": column["setting"],
                        "paper_setting": column["paper"],
                        "metric": column["metric"],
                        "paper_metric": column["paper_metric"],
                    }
                    excluded = exclusion_reason(spec["exclude"], cell)
                    not_run = f"not run: {excluded}" if excluded else api_not_run(key)
                    if not_run:
                        cell["not_run"] = not_run
                    cells.append(cell)
    return cells


def table_score_files(wildcards):
    files = [
        registry.score_file(c["model"], c["dataset"], c["setting"])
        for c in table_cells(wildcards.table)
        if "not_run" not in c
    ]
    return list(dict.fromkeys(files))  # a setting shown in two columns is scored once


def table_notebook(wildcards):
    """notebooks/<table>.ipynb when the table has its own figures, else the generic table notebook."""
    own = os.path.join(workflow.basedir, "notebooks", f"{wildcards.table}.ipynb")
    return own if os.path.exists(own) else os.path.join(workflow.basedir, "notebooks", "paper_table.ipynb")
