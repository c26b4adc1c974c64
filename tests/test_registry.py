"""The registry's names: fine-tuned models, dataset sources and their files."""

from vlmrepro import registry


def test_a_fine_tuned_model_is_found_by_its_name_not_a_prefix():
    # "llava" is a prefix of "llava-lora": the model's recipe comes from the recipe x dataset table
    config = {
        "finetunes": {"llava": {"base": "a", "datasets": ["flowers"]}, "llava-lora": {"base": "b", "datasets": ["x"]}}
    }
    assert registry.finetuned_models(config) == {
        "llava-flowers": {"recipe": "llava", "dataset": "flowers"},
        "llava-lora-x": {"recipe": "llava-lora", "dataset": "x"},
    }
    assert (registry.recipe_of(config, "llava-lora-x"), registry.base_model(config, "llava-lora-x")) == (
        "llava-lora",
        "b",
    )
    assert (
        registry.recipe_of(config, "llava-1.5-7b") is None
        and registry.base_model(config, "llava-1.5-7b") == "llava-1.5-7b"
    )


def test_each_dataset_source_has_its_files():
    datasets = {
        "imagenet": {
            "manifest": {"build": "imagenet"},
            "images": {"directory": "/data/imagenet", "prefix": "./imagenet/"},
        },
        "flowers": {"manifest": {"url": "u", "checksum": "c"}, "images": {"archive": "a", "prefix": "./flowers/"}},
        "shapes": {"world": {"name": "w"}},
        "wikiqa": {"mcq": {"images_from": "imagenet", "images_subdir": "val"}},
    }
    assert registry.dataset_file(datasets, "imagenet", "manifest") == "resources/built/imagenet/manifest.jsonl"
    assert registry.dataset_file(datasets, "imagenet", "classes") == "resources/upstream/imagenet/classes.json"
    assert registry.dataset_file(datasets, "flowers", "manifest") == "resources/upstream/flowers/manifest.jsonl"
    assert registry.dataset_file(datasets, "shapes", "classes") == "resources/world-datasets/shapes/classes.json"
    assert registry.dataset_file(datasets, "wikiqa", "manifest") == "resources/built/wikiqa/manifest.jsonl"
    assert registry.image_root(datasets, "wikiqa") == "/data/imagenet/val"
    assert registry.image_root(datasets, "flowers") == "resources/images/flowers"
    assert registry.image_root(datasets, "shapes") == "resources/world/w/images"
    assert [registry.image_prefix(datasets, d) for d in ("wikiqa", "shapes", "flowers")] == [
        "./wikiqa/",
        "./data/w/",
        "./flowers/",
    ]


def test_the_schema_knows_the_registry_families():
    import yaml

    from conftest import REPO

    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    model = schema["properties"]["models"]["additionalProperties"]
    assert set(model["properties"]["family"]["enum"]) == set(registry.VLM_CLASSES) | set(registry.NON_VLM_FAMILIES)
    vlm_rule = next(c for c in model["allOf"] if "not" in c["if"]["properties"].get("family", {}))
    # the classic VLM rule: every family but the non-VLM ones and chat, which has its own
    assert set(vlm_rule["if"]["properties"]["family"]["not"]["enum"]) == set(registry.NON_VLM_FAMILIES) | {"chat"}
