"""Cross-checks of a configuration beyond its JSON schema (schemas/config.schema.yaml, which checks each entry's own
structure, per-family keys included): references between sections and needs across them. Each error names the key
at fault."""

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


def _check_world(worlds: dict, where: str, name: str, errors: list[str]) -> None:
    if name not in worlds:
        errors.append(f"{where}: unknown world {name!r} (expected one of {sorted(worlds)})")


def _check_corpora(config: dict, errors: list[str]) -> None:
    """A world's corpus names a known world."""
    for key, corpus in config.get("corpora", {}).items():
        if "world" in corpus:
            _check_world(config.get("worlds", {}), f"corpora.{key}.world.name", corpus["world"]["name"], errors)


def _check_datasets(config: dict, errors: list[str]) -> None:
    """A world's dataset names a known world; a multiple-choice set, the dataset holding its images and, for a
    world's questions, a known world."""
    worlds, datasets = config.get("worlds", {}), config.get("datasets", {})
    for key, dataset in datasets.items():
        where = f"datasets.{key}"
        if "world" in dataset:
            _check_world(worlds, f"{where}.world.name", dataset["world"]["name"], errors)
        mcq = dataset.get("mcq")
        if mcq is None:
            continue
        if mcq["images_from"] not in datasets:
            errors.append(f"{where}.mcq.images_from: unknown dataset {mcq['images_from']!r}")
        if "world" in mcq:
            _check_world(worlds, f"{where}.mcq.world", mcq["world"], errors)


def _check_models(config: dict, errors: list[str]) -> None:
    """A model trained in a world names a known world, and a trained LLaVA the CLIP model whose image tower it uses;
    a hub revision pinned by date names a day."""
    import datetime

    models = config.get("models", {})
    for key, model in models.items():
        revision = model.get("hub", {}).get("revision")
        if isinstance(revision, dict):
            try:  # YAML reads an unquoted 2024-05-23 as a date already
                datetime.date.fromisoformat(str(revision["before"]))
            except ValueError:
                errors.append(f"models.{key}.hub.revision.before: {revision['before']!r} is not a day (YYYY-MM-DD)")
        train = model.get("train")
        if train is None:
            continue
        where = f"models.{key}.train"
        _check_world(config.get("worlds", {}), f"{where}.world", train["world"], errors)
        vision = train.get("vision")
        if train["kind"] == "llava" and vision not in models:
            errors.append(f"{where}.vision: unknown model {vision!r} (the CLIP whose image tower it uses)")


def _models_as_tables_name_them(config: dict) -> dict[str, dict]:
    """The models of the config, each fine-tuned model "<recipe>-<dataset>", and each recipe's own name, which stands
    for its fine-tuned models in tables. A fine-tuned model is its base's entry with the recipe's cot_template."""
    models = dict(config.get("models", {}))
    for key, recipe in config.get("finetunes", {}).items():
        # in config order, as rules/common.smk registers them: a recipe may start from an earlier one's model
        tuned = {**models.get(recipe["base"], {}), "cot_template": recipe.get("cot_template", "")}
        models[key] = tuned
        models.update({f"{key}-{dataset}": tuned for dataset in recipe.get("datasets", [])})
    return models


def _check_finetunes(config: dict, models: dict[str, dict], errors: list[str]) -> None:
    """A recipe names a known base model, datasets, corpus and captioning model, and settings of the kind and split
    it uses; evaluating every epoch and merging the adapters onto another language model suit what it trains."""
    settings, datasets = config.get("settings", {}), config.get("datasets", {})
    bases = set(config.get("models", {}))  # and, as the recipes are registered in order, earlier recipes' models
    for key, recipe in config.get("finetunes", {}).items():
        where = f"finetunes.{key}"
        if recipe["base"] not in bases:
            errors.append(f"{where}.base: unknown model {recipe['base']!r}")
        bases.update(f"{key}-{dataset}" for dataset in recipe.get("datasets", []))
        every_epoch = recipe.get("evaluate_every_epoch")
        if every_epoch and (
            settings.get(every_epoch, {}).get("kind") != "generate" or recipe["trainable"] == "projector+lora"
        ):
            errors.append(
                f"{where}.evaluate_every_epoch: {every_epoch!r} must be a generate setting, and the recipe not projector+lora"
            )
        merge_base = recipe.get("lora_merge_base")
        if merge_base and (
            models.get(merge_base, {}).get("family") != "llm" or recipe["trainable"] != "projector+lora"
        ):
            errors.append(
                f"{where}.lora_merge_base: {merge_base!r} must be a model of family llm, for trainable projector+lora"
            )
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


def _check_prompt_templates(
    where: str, setting: str, config: dict, group: dict, models: dict, errors: list[str]
) -> None:
    """A log-likelihood setting needs each model's loglik.template, a chain-of-thought setting each model's
    cot_template (baselines have no prompt)."""
    spec = config["settings"][setting]
    known = [model for model in group["models"] if model in models]
    if spec["kind"] == "loglik":
        for model in known:
            if "template" not in models[model].get("loglik", {}):
                errors.append(f"{where}: setting {setting!r} needs models.{model}.loglik.template")
    if spec.get("chain_of_thought"):
        for model in known:
            if models[model].get("family") != "baseline" and "{question}" not in models[model].get("cot_template", ""):
                errors.append(f"{where}: setting {setting!r} needs models.{model}.cot_template")


def _kind_that_runs_models(
    where: str, setting: str, config: dict, group: dict, errors: list[str]
) -> tuple[str, str] | None:
    """(kind, setting) of the jobs that run a column's models. A frequency setting correlates the outputs of its
    source (a generate, clip or probe setting), a rescore, robustness or benchmark setting works on generation,
    a probe on the features of a VLM (features) or of a CLIP (clip_features). None, with the errors appended, where
    a source is of the wrong kind; the datasets a rescore or benchmark setting needs are checked on the way."""
    settings, datasets = config["settings"], config.get("datasets", {})
    kind = settings[setting]["kind"]
    if kind == "frequency":
        source = settings[setting].get("source", "")
        if settings.get(source, {}).get("kind") not in ("generate", "clip", "probe"):
            errors.append(f"settings.{setting}.source: {source!r} is not a generate, clip or probe setting")
            return None
        if not {"pretrain", "instruct"} <= set(config.get("corpora", {})):
            errors.append(f"settings.{setting} needs corpora.pretrain and corpora.instruct")
        kind, setting = settings[source]["kind"], source
    if kind in ("rescore", "robustness"):
        source = settings[setting].get("source", "")
        if settings.get(source, {}).get("kind") != "generate":
            errors.append(f"settings.{setting}.source: {source!r} is not a generate setting")
            return None
        if kind == "rescore":
            for dataset in group["datasets"]:
                if not datasets.get(dataset, {}).get("synonyms"):
                    errors.append(f"{where}: setting {setting!r} needs datasets.{dataset}.synonyms")
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
            return None
        kind = "clip" if settings[source]["kind"] == "clip_features" else "generate"
    return kind, setting


def _check_models_run(
    where: str, setting: str, kind: str, config: dict, group: dict, models: dict, errors: list[str]
) -> None:
    """Every model of a group can be run by jobs of ``kind``: a baseline on multiple-choice datasets (on
    classification ones for dataset statistics), an API model by generation only, a CLIP model by the CLIP kinds
    only and every other model by the others."""
    datasets = config.get("datasets", {})
    for model in group["models"]:
        family = models.get(model, {}).get("family")
        if family == "baseline":
            wants_mcq = models[model].get("baseline") != "dataset_statistics"
            if not all(("mcq" in datasets.get(d, {})) == wants_mcq for d in group["datasets"]):
                kind_needed = "multiple-choice" if wants_mcq else "classification"
                errors.append(f"{where}: baseline {model!r} needs {kind_needed} datasets")
        elif family == "api":
            if kind != "generate":
                errors.append(f"{where}: setting {setting!r} ({kind}) cannot run API model {model!r}")
        elif model in models and (family in CLIP_FAMILIES) != (kind in ("clip", "clip_features")):
            errors.append(f"{where}: setting {setting!r} ({kind}) cannot run model {model!r}")


def _check_tables(config: dict, models: dict[str, dict], errors: list[str]) -> None:
    """Every group of a table names known models, datasets and settings, and its models can run each column."""
    settings, datasets = config.get("settings", {}), config.get("datasets", {})
    for name, table in config.get("tables", {}).items():
        for g, group in enumerate(table["groups"]):
            where = f"tables.{name}.groups[{g}]"
            errors.extend(
                f"{where}.models: unknown model {model!r}" for model in group["models"] if model not in models
            )
            errors.extend(f"{where}.datasets: unknown dataset {d!r}" for d in group["datasets"] if d not in datasets)
            for column in group["columns"]:
                setting = column["setting"]
                if setting not in settings:
                    errors.append(f"{where}.columns: unknown setting {setting!r}")
                    continue
                _check_prompt_templates(where, setting, config, group, models, errors)
                runs = _kind_that_runs_models(where, setting, config, group, errors)
                if runs is not None:
                    kind, runs_setting = runs
                    _check_models_run(where, runs_setting, kind, config, group, models, errors)
    tables = config.get("tables", {})
    for name in config.get("requested_tables", []):
        if name not in tables:
            errors.append(f"requested_tables: unknown table {name!r} (expected one of {sorted(tables)})")
    for k, finding in enumerate(config.get("report", {}).get("findings", [])):
        if "table" in finding and not tables.get(finding["table"], {}).get("on_request"):
            errors.append(f"report.findings[{k}].table: {finding['table']!r} is not a table marked on_request")


def check_config(config: dict) -> None:
    """Raise ConfigError listing every reference between sections that names nothing (worlds, datasets, models,
    settings, corpora) and every need across sections. Each entry's own structure, per-family keys included, is
    the schema's to check, before this."""
    errors: list[str] = []
    models = _models_as_tables_name_them(config)
    _check_corpora(config, errors)
    _check_datasets(config, errors)
    _check_models(config, errors)
    _check_finetunes(config, models, errors)
    # a recipe's own name stands for its models in tables only: scores are those of "<recipe>-<dataset>"
    _check_findings(config, set(models) - set(config.get("finetunes", {})), errors)
    _check_tables(config, models, errors)
    errors += cluster.check_config(config)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
