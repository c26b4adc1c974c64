"""Cross-checks of a configuration beyond its JSON schema: references between sections and per-family needs.
Each error names the key at fault."""

from __future__ import annotations

from vlmrepro import cluster
from vlmrepro.registry import CLIP_FAMILIES


class ConfigError(ValueError):
    pass


def _check_findings(config: dict, models: set[str], errors: list[str]) -> None:
    """report.findings may only read scores of ``models`` (fine-tuned "<recipe>-<dataset>" ones included), and of
    registered datasets and settings."""
    from .findings import check_refs

    known = {"model": models, "dataset": set(config.get("datasets", {})), "setting": set(config.get("settings", {}))}
    for i, finding in enumerate(config.get("report", {}).get("findings", [])):
        for check in finding["checks"]:
            for ref in check_refs(check):
                for key, names in known.items():
                    message = f"report.findings[{i}] ({finding['name']}): unknown {key} {ref.get(key)!r}"
                    if ref.get(key) not in names and message not in errors:
                        errors.append(message)


MAX_CONFIG_VALUES = 200_000  # the paper's config.yaml holds ~3,000


def check_config_size(config, limit: int = MAX_CONFIG_VALUES) -> None:
    """Refuse a configuration that expands to more than ``limit`` values. YAML aliases let a few lines describe
    billions of values (an "alias bomb"); they cost nothing while shared, but the schema check and Snakemake's
    copies of the config expand them and exhaust memory with no message. Sizes are counted per distinct node, so
    the check itself stays cheap."""
    sizes: dict[int, int] = {}

    def size(node, path: str) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) in sizes:
            return sizes[id(node)]
        children = node.items() if isinstance(node, dict) else enumerate(node)
        total = 1
        for key, child in children:
            total += size(child, f"{path}.{key}" if path else str(key))
            if total > limit:
                raise ConfigError(
                    f"configuration expands to more than {limit:,} values under {path or 'the top level'!r} "
                    "(nested YAML aliases?): refused before anything expands it"
                )
        sizes[id(node)] = total
        return total

    size(config, "")


def check_config(config: dict) -> None:
    errors = []
    worlds = config.get("worlds", {})

    def check_world(where: str, name: str) -> None:
        if name not in worlds:
            errors.append(f"{where}: unknown world {name!r} (expected one of {sorted(worlds)})")

    for key, corpus in config.get("corpora", {}).items():
        if "world" in corpus:
            check_world(f"corpora.{key}.world.name", corpus["world"]["name"])
    for key, ds in config.get("datasets", {}).items():
        where = f"datasets.{key}"
        synonyms = ds.get("synonyms")
        if synonyms is not None and bool(synonyms.get("synthetic")) == ("url" in synonyms):
            errors.append(f"{where}.synonyms needs a url, or synthetic: true")
        if "world" in ds:
            check_world(f"{where}.world.name", ds["world"]["name"])
        if "benchmark" in ds or "world" in ds:
            continue
        if "mcq" in ds:
            mcq = ds["mcq"]
            if mcq["images_from"] not in config.get("datasets", {}):
                errors.append(f"{where}.mcq.images_from: unknown dataset {mcq['images_from']!r}")
            if ("world" in mcq) + bool({"url", "checksum"} & mcq.keys()) != 1:
                errors.append(f"{where}.mcq needs url + checksum, or world")
            if "world" in mcq:
                check_world(f"{where}.mcq.world", mcq["world"])
            continue
        manifest, classes, images = ds.get("manifest", {}), ds.get("classes", {}), ds.get("images", {})
        if not ("build" in manifest or {"url", "checksum"} <= manifest.keys()):
            errors.append(f"{where}.manifest needs url + checksum, or build")
        if not {"url", "checksum"} <= classes.keys():
            errors.append(f"{where}.classes needs url + checksum")
        if ("archive" in images) == ("directory" in images):
            errors.append(f"{where}.images needs exactly one of archive or directory")
        if manifest.get("build") == "imagenet" and "directory" not in images:
            errors.append(f"{where}.images.directory is required to build the ImageNet manifest")
    for key, model in config.get("models", {}).items():
        where = f"models.{key}"
        if model["family"] == "api":
            if "api" not in model:
                errors.append(f"{where}.api (provider, model) is required for family api")
            if "{question}" not in model.get("template", ""):
                errors.append(f"{where}.template must contain {{question}}")
            continue
        if model["family"] == "baseline":
            if "baseline" not in model:
                errors.append(f"{where}.baseline (random or max_frequency) is required for family baseline")
            continue
        if len({"hub", "tiny", "train"} & model.keys()) != 1:
            errors.append(f"{where} needs exactly one of hub, tiny or train")
        if "train" in model:
            check_world(f"{where}.train.world", model["train"]["world"])
            vision = model["train"].get("vision")
            if model["train"]["kind"] == "llava" and vision not in config.get("models", {}):
                errors.append(f"{where}.train.vision: unknown model {vision!r} (the CLIP whose image tower it uses)")
        if model["family"] == "llm":  # only ever a LoRA merge base: no prompt of its own
            continue
        if model["family"] not in CLIP_FAMILIES:
            if "{question}" not in model.get("template", ""):
                errors.append(f"{where}.template must contain {{question}}")
            if not model.get("answer_marker"):
                errors.append(f"{where}.answer_marker is required for family {model['family']}")
            if model.get("batching") == "upstream" and model.get("backend") == "vllm":
                errors.append(f"{where}: batching upstream (padded HF batches) needs backend transformers")
    for key, corpus in config.get("corpora", {}).items():
        if len({"hub", "world"} & corpus.keys()) != 1:
            errors.append(f"corpora.{key} needs exactly one of hub or world")
    settings, datasets = config.get("settings", {}), config.get("datasets", {})
    models = dict(config.get("models", {}))
    for key, recipe in config.get("finetunes", {}).items():
        where = f"finetunes.{key}"
        if recipe["base"] not in models:
            errors.append(f"{where}.base: unknown model {recipe['base']!r}")
        every_epoch = recipe.get("evaluate_every_epoch")
        if every_epoch and (settings.get(every_epoch, {}).get("kind") != "generate" or recipe["trainable"] == "projector+lora"):
            errors.append(f"{where}.evaluate_every_epoch: {every_epoch!r} must be a generate setting, and the recipe not projector+lora")
        merge_base = recipe.get("lora_merge_base")
        if merge_base and (models.get(merge_base, {}).get("family") != "llm" or recipe["trainable"] != "projector+lora"):
            errors.append(f"{where}.lora_merge_base: {merge_base!r} must be a model of family llm, for trainable projector+lora")
            continue
        if settings.get(recipe.get("train_setting", "finetune_train"), {}).get("split") != "train":
            errors.append(f"{where}.train_setting must name a setting with split: train")
        for dataset in recipe.get("datasets", []):
            if dataset not in datasets:
                errors.append(f"{where}.datasets: unknown dataset {dataset!r}")
        if recipe.get("mix") and recipe["mix"]["corpus"] not in config.get("corpora", {}):
            errors.append(f"{where}.mix.corpus: unknown corpus {recipe['mix']['corpus']!r}")
        captions = recipe.get("captions")
        if captions and captions["model"] not in models:
            errors.append(f"{where}.captions.model: unknown model {captions['model']!r}")
        if captions and settings.get(captions["setting"], {}).get("split") != "train":
            errors.append(f"{where}.captions.setting must name a generate setting with split: train")
        # a recipe stands for its fine-tuned models in tables; each "<recipe>-<dataset>" is a model too
        tuned = {**models[recipe["base"]], "cot_template": recipe.get("cot_template", "")}
        models[key] = tuned
        models.update({f"{key}-{dataset}": tuned for dataset in recipe.get("datasets", [])})
    # a recipe's own name stands for its models in tables only: scores are those of "<recipe>-<dataset>"
    _check_findings(config, set(models) - set(config.get("finetunes", {})), errors)
    for name, table in config.get("tables", {}).items():
        for g, group in enumerate(table["groups"]):
            where = f"tables.{name}.groups[{g}]"
            for model in group["models"]:
                if model not in models:
                    errors.append(f"{where}.models: unknown model {model!r}")
            for dataset in group["datasets"]:
                if dataset not in datasets:
                    errors.append(f"{where}.datasets: unknown dataset {dataset!r}")
            for column in group["columns"]:
                setting = column["setting"]
                if setting not in settings:
                    errors.append(f"{where}.columns: unknown setting {setting!r}")
                    continue
                kind = settings[setting]["kind"]
                if kind == "loglik":
                    for model in group["models"]:
                        if model in models and "template" not in models[model].get("loglik", {}):
                            errors.append(f"{where}: setting {setting!r} needs models.{model}.loglik.template")
                if settings[setting].get("chain_of_thought"):
                    for model in group["models"]:
                        if models.get(model, {}).get("family") == "baseline":
                            continue
                        if model in models and "{question}" not in models[model].get("cot_template", ""):
                            errors.append(f"{where}: setting {setting!r} needs models.{model}.cot_template")
                if kind == "frequency":
                    source = settings[setting].get("source", "")
                    if settings.get(source, {}).get("kind") not in ("generate", "clip", "probe"):
                        errors.append(f"settings.{setting}.source: {source!r} is not a generate, clip or probe setting")
                        continue
                    if not {"pretrain", "instruct"} <= set(config.get("corpora", {})):
                        errors.append(f"settings.{setting} needs corpora.pretrain and corpora.instruct")
                    kind, setting = settings[source]["kind"], source
                if kind == "rescore":
                    source = settings[setting].get("source", "")
                    if settings.get(source, {}).get("kind") != "generate":
                        errors.append(f"settings.{setting}.source: {source!r} is not a generate setting")
                        continue
                    for dataset in group["datasets"]:
                        if not datasets.get(dataset, {}).get("synonyms"):
                            errors.append(f"{where}: setting {setting!r} needs datasets.{dataset}.synonyms")
                    kind = "generate"
                if kind == "robustness":
                    source = settings[setting].get("source", "")
                    if settings.get(source, {}).get("kind") != "generate":
                        errors.append(f"settings.{setting}.source: {source!r} is not a generate setting")
                        continue
                    kind = "generate"
                if kind == "benchmark":
                    for dataset in group["datasets"]:
                        if "benchmark" not in datasets.get(dataset, {}):
                            errors.append(f"{where}: setting {setting!r} needs datasets.{dataset}.benchmark")
                    kind = "generate"
                if kind == "probe":
                    source = settings[setting].get("features", "")
                    if settings.get(source, {}).get("kind") not in ("features", "clip_features"):
                        errors.append(f"settings.{setting}.features: {source!r} is not a features setting")
                        continue
                    kind = "clip" if settings[source]["kind"] == "clip_features" else "generate"
                for model in group["models"]:
                    family = models.get(model, {}).get("family")
                    if family == "baseline":
                        wants_mcq = models[model].get("baseline") != "dataset_statistics"
                        if not all(("mcq" in datasets.get(d, {})) == wants_mcq for d in group["datasets"]):
                            kind_needed = "multiple-choice" if wants_mcq else "classification"
                            errors.append(f"{where}: baseline {model!r} needs {kind_needed} datasets")
                        continue
                    if family == "api" and kind != "generate":
                        errors.append(f"{where}: setting {setting!r} ({kind}) cannot run API model {model!r}")
                        continue
                    is_clip = family in CLIP_FAMILIES
                    if model in models and is_clip != (kind in ("clip", "clip_features")):
                        errors.append(f"{where}: setting {setting!r} ({kind}) cannot run model {model!r}")
    errors += cluster.check_config(config)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
