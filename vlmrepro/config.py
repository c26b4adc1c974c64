"""Cross-checks of a configuration beyond its JSON schema: references between sections and per-family needs.
Each error names the key at fault."""

from __future__ import annotations

from .models import CLIP_FAMILIES


class ConfigError(ValueError):
    pass


def check_config(config: dict) -> None:
    errors = []
    for key, ds in config.get("datasets", {}).items():
        where = f"datasets.{key}"
        if "synthetic" in ds:
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
        if ("hub" in model) == ("tiny" in model):
            errors.append(f"{where} needs exactly one of hub or tiny")
        if model["family"] not in CLIP_FAMILIES:
            if "{question}" not in model.get("template", ""):
                errors.append(f"{where}.template must contain {{question}}")
            if not model.get("answer_marker"):
                errors.append(f"{where}.answer_marker is required for family {model['family']}")
    settings = config.get("settings", {})
    for name, table in config.get("tables", {}).items():
        where = f"tables.{name}"
        for model in table.get("models", []):
            if model not in config.get("models", {}):
                errors.append(f"{where}.models: unknown model {model!r}")
        for dataset in table.get("datasets", []):
            if dataset not in config.get("datasets", {}):
                errors.append(f"{where}.datasets: unknown dataset {dataset!r}")
        for group, kind in (("vlm_settings", "generate"), ("clip_settings", "clip")):
            for setting in table.get(group, []):
                if setting not in settings:
                    errors.append(f"{where}.{group}: unknown setting {setting!r}")
                elif settings[setting]["kind"] != kind:
                    errors.append(f"{where}.{group}: setting {setting!r} is of kind {settings[setting]['kind']!r}")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
