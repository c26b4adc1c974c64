# Helpers shared by every stage: configuration checks, registries split by kind, input and params functions.
import os
import re

from snakemake.utils import validate

from vlmrepro import cluster, findings, job_params, jobs, registry, table_plan, versions
from vlmrepro.api import retry_state_path, retry_token
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
FINETUNED_MODELS = registry.add_finetuned_models(config)

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


def images_of(dataset):
    """The dataset whose image folder a dataset reads (a multiple-choice set reads another set's) and whether a
    rule makes that folder."""
    ds = DATASETS[dataset]["mcq"]["images_from"] if dataset in MCQ_DATASETS else dataset
    return ds, ds in ARCHIVE_DATASETS or ds in WORLD_DATASETS


def image_inputs(wildcards):
    """Images made by a rule are inputs; a user directory is checked when the job runs (so planning works
    before the licence-gated images are in place)."""
    ds, made = images_of(wildcards.dataset)
    return [image_root(ds)] if made else []


def image_folder_state(wildcards):
    """The fingerprint of a user image folder, a param of its splits' preparation: an image replaced in place
    reruns it. Folders a rule makes are its outputs, which Snakemake tracks itself."""
    ds, made = images_of(wildcards.dataset)
    if made or not config["image_change_threads"]:
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


def probe_features_dir(wildcards):
    source = SETTINGS[wildcards.setting]["features"]
    return f"results/features/{wildcards.model}/{wildcards.dataset}/{source}"


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


def api_retry(wildcards):
    """Changes while the job's last run left api_error items, which the next run then asks again."""
    return retry_token(retry_state_path(wildcards.model, wildcards.dataset, wildcards.setting))


def baseline_inputs(wildcards):
    """Dataset statistics read every manifest row; the multiple-choice baselines read the evaluated questions."""
    if MODELS[wildcards.model]["baseline"] == "dataset_statistics":
        return {
            "rows": f"results/data/{wildcards.dataset}/all.jsonl",
            "classes": f"results/data/{wildcards.dataset}/classes.json",
        }
    return {"rows": planned_split_of(wildcards.dataset)}


def synonyms_file(wildcards):
    if not DATASETS[wildcards.dataset].get("synonyms"):
        raise ValueError(f"setting {wildcards.setting!r} needs datasets.{wildcards.dataset}.synonyms in the config")
    return registry.synonyms_file(DATASETS, wildcards.dataset)


def compute_resources(rule_name):
    """What a compute rule's job asks a cluster for: CPUs, memory, runtime, and a GPU only where one is used
    (resources and cluster in the config; vlmrepro.cluster)."""
    return cluster.snakemake_resources(config, rule_name)


# --- tables ---------------------------------------------------------------------------------------------------

TABLES = table_plan.planned_tables(config)
FINDINGS = [f for f in config["report"]["findings"] if "table" not in f or f["table"] in TABLES]


def table_cells(table):
    return table_plan.table_cells(config, TABLES[table])


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
