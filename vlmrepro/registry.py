"""The names the workflow is built from, in one place: model families, setting kinds, how fine-tuned models are
named, where each dataset's files come from and where scores are written. ``rules/common.smk``, the config checks,
``make estimate`` and the cluster requests read them from here, so adding a family, a kind of setting or a source
of data is one entry here and one adapter (README "Adding a model").
"""

from __future__ import annotations

import os

# --- models ---------------------------------------------------------------------------------------------------

# image-text embedding models, scored by similarity (CLIP zero-shot, linear heads on the image tower)
CLIP_FAMILIES = ("open_clip",)
# weightless "models" of a table: naive baselines computed from the data, and proprietary models behind APIs
BASELINE_FAMILIES = ("baseline",)
API_FAMILIES = ("api",)
# a plain language model: only the base a LoRA fine-tune is merged onto (finetunes.<r>.lora_merge_base)
LLM_FAMILIES = ("llm",)
# generative VLMs: family -> its transformers class, loaded by vlmrepro.models.VisionLanguageModel
VLM_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "blip2": "Blip2ForConditionalGeneration",
    "instructblip": "InstructBlipForConditionalGeneration",
    # any current VLM (Qwen2.5-VL, InternVL, Gemma 3, ...), prompted through its processor's chat template
    "chat": "AutoModelForImageTextToText",
}
NON_VLM_FAMILIES = CLIP_FAMILIES + BASELINE_FAMILIES + API_FAMILIES + LLM_FAMILIES
# transformers 5's image processors come in two implementations; the paper's families default to the PIL one,
# which gives transformers 4.40's pixels (upstream's) exactly
IMAGE_BACKENDS = ("pil", "torchvision")


def image_backend(family: str, configured: str | None) -> str | None:
    """models.<m>.image_backend, or its family's default: pil for the paper's VLMs, transformers' choice (None) for
    family chat and the models without an image processor."""
    if configured is not None or family == "chat" or family in NON_VLM_FAMILIES:
        return configured
    return "pil"


def local_checkpoint_files(path: str) -> list[str]:
    """The files of a local checkpoint (models.<m>.local.path), sorted; a missing folder is a clear error."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"local checkpoint {path} is not a directory (models.<m>.local.path)")
    return sorted(os.path.join(top, name) for top, _, names in os.walk(path) for name in names)


def models_of_family(models: dict, families: tuple[str, ...]) -> list[str]:
    return [key for key, model in models.items() if model["family"] in families]


def vlm_models(models: dict) -> list[str]:
    return [key for key, model in models.items() if model["family"] not in NON_VLM_FAMILIES]


def finetuned_name(recipe: str, dataset: str) -> str:
    """Every fine-tuning recipe x dataset is a model of the registry under this name."""
    return f"{recipe}-{dataset}"


def finetuned_models(config: dict) -> dict[str, dict[str, str]]:
    """{fine-tuned model: {recipe, dataset}} of a config."""
    return {
        finetuned_name(recipe, dataset): {"recipe": recipe, "dataset": dataset}
        for recipe, spec in config["finetunes"].items()
        for dataset in spec["datasets"]
    }


def add_finetuned_models(config: dict) -> dict[str, dict[str, str]]:
    """Register every fine-tuning recipe x dataset as a model of ``config["models"]``, evaluated by the ordinary
    rules: the base model's entry with the recipe's prompt and evaluation settings. Returns
    {fine-tuned model: {recipe, dataset}}."""
    models, finetuned = config["models"], finetuned_models(config)
    for name, entry in finetuned.items():
        ft = config["finetunes"][entry["recipe"]]
        models[name] = {
            **models[ft["base"]],
            "paper_name": ft["paper_name"],
            "template": ft["template"],
            "answer_marker": ft["answer_marker"],
            # the LLaVA code base's model_vqa (and LAVIS) return the generation alone, and it is scored whole
            "answer_from": "generation",
            # evaluated on images prepared as in training (LLaVA's model_vqa pads them to a square too)
            "image_aspect_ratio": ft["image_aspect_ratio"],
            # model_vqa (LLaVA) ran one item at a time and LAVIS's caption prompt is the same for every item:
            # nothing was padded, so left padding and sorted batches give upstream's answers
            "batching": "fast",
            "score_resplit": None,
            "cot_template": ft["cot_template"],
            "gpus": min(models[ft["base"]]["gpus"], 1),
            "finetuned": dict(entry),
        }
    return finetuned


_recipes: tuple[dict, dict[str, str]] = ({}, {})  # (the finetunes section, {fine-tuned model: recipe}) last asked


def recipe_of(config: dict, model: str) -> str | None:
    """The fine-tuning recipe of a fine-tuned model, or None for a model of the registry. Asked once per job (the
    cluster's requests, the cost model), so the table is built once per config (a loaded config is not changed)."""
    global _recipes
    if _recipes[0] is not config["finetunes"]:
        _recipes = (config["finetunes"], {name: e["recipe"] for name, e in finetuned_models(config).items()})
    return _recipes[1].get(model)


def base_model(config: dict, model: str) -> str:
    """The registry model a fine-tuned model starts from (the model itself otherwise)."""
    recipe = recipe_of(config, model)
    return config["finetunes"][recipe]["base"] if recipe else model


# --- settings -------------------------------------------------------------------------------------------------

# what a setting does (settings.<s>.kind); each kind has its rules in rules/evaluate.smk
SETTING_KINDS = (
    "generate",  # VLM generation, scored by the substring rule or a parser
    "clip",  # CLIP zero-shot argmax
    "loglik",  # probabilistic inference: class log-likelihoods
    "features",  # VLM hidden states for probes
    "clip_features",  # CLIP image embeddings for linear heads
    "probe",  # linear probes / heads on stored features
    "frequency",  # accuracy against class frequency in training data
    "rescore",  # another setting's outputs scored with synonyms
    "benchmark",  # an external harness (lmms-eval)
    "robustness",  # batch-size and resume invariance of another setting's outputs
)
FEATURE_KINDS = ("features", "clip_features")


def settings_of_kind(settings: dict, kinds: tuple[str, ...]) -> list[str]:
    return [key for key, setting in settings.items() if setting["kind"] in kinds]


# --- datasets -------------------------------------------------------------------------------------------------

# where a dataset's manifest and class list come from, by the source of the dataset (dataset_source)
DATASET_FILES = {
    # multiple-choice questions about another dataset's images: both files built from the question file
    "mcq": {
        "manifest": "resources/built/{dataset}/manifest.jsonl",
        "classes": "resources/built/{dataset}/classes.json",
    },
    # a dataset of the demo's world, cut by its own job
    "world": {
        "manifest": "resources/world-datasets/{dataset}/manifest.jsonl",
        "classes": "resources/world-datasets/{dataset}/classes.json",
    },
    # a manifest built from the image folder (ImageNet), the class list pinned upstream
    "built": {
        "manifest": "resources/built/{dataset}/manifest.jsonl",
        "classes": "resources/upstream/{dataset}/classes.json",
    },
    # both files pinned upstream (url + checksum)
    "upstream": {
        "manifest": "resources/upstream/{dataset}/manifest.jsonl",
        "classes": "resources/upstream/{dataset}/classes.json",
    },
}


def dataset_source(spec: dict) -> str:
    """The key of DATASET_FILES for a dataset's config entry."""
    if "mcq" in spec:
        return "mcq"
    if "world" in spec:
        return "world"
    if spec.get("manifest", {}).get("build"):
        return "built"
    return "upstream"


def dataset_file(datasets: dict, dataset: str, which: str) -> str:
    """The ``manifest`` or ``classes`` file of a dataset."""
    return DATASET_FILES[dataset_source(datasets[dataset])][which].format(dataset=dataset)


def image_root(datasets: dict, dataset: str) -> str:
    """The folder a dataset's manifest paths are relative to."""
    spec = datasets[dataset]
    if "mcq" in spec:  # images found by file name among another dataset's
        return os.path.join(image_root(datasets, spec["mcq"]["images_from"]), spec["mcq"]["images_subdir"])
    if "world" in spec:
        return f"resources/world/{spec['world']['name']}/images"
    if "archive" in spec.get("images", {}):
        return f"resources/images/{dataset}"
    return spec["images"]["directory"]


def image_prefix(datasets: dict, dataset: str) -> str:
    """The prefix of the manifest's image paths that image_root replaces."""
    spec = datasets[dataset]
    if "mcq" in spec:
        return f"./{dataset}/"
    if "world" in spec:
        return f"./data/{spec['world']['name']}/"
    return spec["images"]["prefix"]


def questions_file(datasets: dict, dataset: str) -> str:
    """The question file of a multiple-choice dataset."""
    mcq = datasets[dataset]["mcq"]
    if "world" in mcq:
        return f"resources/world/{mcq['world']}/wikiqa.jsonl"
    return f"resources/upstream/{dataset}/questions.jsonl"


def synonyms_file(datasets: dict, dataset: str) -> str:
    """The synonym list of a dataset: generated for the demo, pinned upstream otherwise."""
    if datasets[dataset]["synonyms"].get("synthetic"):
        return f"resources/synthetic/{dataset}/synonyms.txt"
    return f"resources/upstream/{dataset}/synonyms.txt"


# --- results --------------------------------------------------------------------------------------------------

SCORE_FILE = "results/scores/{model}/{dataset}/{setting}.json"


def score_file(model: str, dataset: str, setting: str) -> str:
    return SCORE_FILE.format(model=model, dataset=dataset, setting=setting)
