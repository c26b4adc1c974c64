"""The demo world: deterministic data with a long tail, and its trained models in the hub layouts, loaded by the
ordinary loaders (the CLIP's image tower converted exactly into the LLaVA's)."""

import json

import numpy as np
import pytest
from PIL import Image

from vlmrepro.config import check_config
from vlmrepro.findings import evaluate_check, evaluate_findings, score_refs
from vlmrepro.demo.world import DEFAULT_SPEC, build_world, long_tail_counts, world_classes

TINY_WORLD = {"clip_per_class": 3, "head": 8, "tail": 1, "train_per_class": 2, "test_per_class": 2, "wikiqa_per_class": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    build_world(root / "a", TINY_WORLD, name="shapes")
    return root


def test_world_is_deterministic_and_complete(world):
    build_world(world / "b", TINY_WORLD, name="shapes")
    for file in ("manifest.jsonl", "wikiqa.jsonl", "clip_corpus.jsonl", "vlm_corpus.json", "wiki_corpus.json"):
        assert (world / "a" / file).read_bytes() == (world / "b" / file).read_bytes(), file
    classes = json.loads((world / "a" / "classes.json").read_text())
    assert len(classes) == len(set(classes)) >= 24
    rows = [json.loads(line) for line in open(world / "a" / "manifest.jsonl")]
    assert {r["label"] for r in rows} == set(classes) and rows[0]["image"].startswith("./data/shapes/")
    for row in rows[:3]:
        assert Image.open(world / "a" / "images" / row["image"].removeprefix("./data/shapes/")).size == (32, 32)
    question = json.loads(open(world / "a" / "wikiqa.jsonl").readline())
    assert question["classname"] not in question["text"] and question["label"] in "ABCD"


def test_vlm_corpus_is_long_tailed_and_clip_corpus_even():
    counts = long_tail_counts(world_classes(0), DEFAULT_SPEC)
    assert max(counts.values()) / min(counts.values()) >= 100  # two orders of magnitude
    assert len(set(counts.values())) > 20


def test_every_class_has_a_chain_of_thought_question_and_counts_list_its_image_records(world):
    """The long tail leaves rare classes with no fact question in the VLM corpus; the floor adds one per class, so
    fine-tuning on recognition carries over to ImageWikiQA for every class. counts.json counts what is there."""
    corpus = json.loads((world / "a" / "vlm_corpus.json").read_text())
    classes = json.loads((world / "a" / "classes.json").read_text())
    floor = [r for r in corpus if "/vlmqa/" in r.get("image", "")]
    named = sorted(r["image"].rsplit("_", 2)[1] for r in floor)
    assert named == sorted(classes) and all(r["conversations"][1]["value"].startswith("Let's think") for r in floor)
    counts = json.loads((world / "a" / "counts.json").read_text())
    for name in classes:
        assert counts[name] == sum(f"_{name}_" in r.get("image", "") for r in corpus), name


def test_trained_models_load_through_the_hub_loaders(world, tmp_path):
    from vlmrepro.io import read_json, read_jsonl
    from vlmrepro.models import ClipModel, VisionLanguageModel
    from vlmrepro.demo.train import llava_examples, train_clip, train_llava

    root = world / "a"
    clip_log = train_clip(read_jsonl(root / "clip_corpus.jsonl"), root / "images", tmp_path / "clip", {"epochs": 1})
    assert clip_log["steps"] > 0
    clip = ClipModel(tmp_path / "clip", device="cpu")
    assert clip.encode_texts(["A photo of a x."]).shape[0] == 1
    examples = llava_examples(read_json(root / "vlm_corpus.json"), {"shapes": str(root / "images")}, 0.3, 0)
    log = train_llava(tmp_path / "clip", examples[:32], read_json(root / "classes_full.json"), tmp_path / "llava",
                      {"epochs": 1})  # fmt: skip
    assert log["vision_conversion_max_abs_diff"] < 1e-5  # open_clip tower == converted CLIPVisionModel tower
    vlm = VisionLanguageModel(tmp_path / "llava", "llava", device="cpu")
    image = Image.open(next(e["path"] for e in examples if e["path"])).convert("RGB")
    inputs = vlm.encode([image], ["USER: <image>\nWhat type of object is in this photo?\nASSISTANT:"])
    assert len(vlm.generate(inputs, 3)) == 1
    # the saved tower is the trained CLIP's, not a fresh initialisation
    tower = vlm.model.model.vision_tower.state_dict()
    patch = next(v for k, v in tower.items() if k.endswith("patch_embedding.weight"))
    np.testing.assert_allclose(patch.numpy(), clip.model.visual.conv1.weight.detach().numpy(), atol=1e-6)


def test_unknown_world_is_named():
    config = {"worlds": {"shapes": {}}, "datasets": {"d": {"eval_split": "test", "world": {"name": "shape"}}}}
    with pytest.raises(ValueError, match=r"datasets\.d\.world\.name: unknown world 'shape'"):
        check_config(config)


def test_findings_checks_and_their_margins():
    a = {"model": "m", "dataset": "d", "setting": "s"}
    b = {**a, "setting": "t"}
    scores = {"results/scores/m/d/s.json": {"accuracy": 90.0, "spearman_r": -0.2}, "results/scores/m/d/t.json": {"accuracy": 50.0}}
    checked = evaluate_check({"left": a, "op": ">", "right": b, "margin": 40}, scores)
    assert checked["holds"] and (checked["measured"], checked["required"]) == (40.0, 40)
    assert checked["scores"] == {"m s accuracy": 90.0, "m t accuracy": 50.0}
    assert not evaluate_check({"left": a, "op": ">", "right": b, "margin": 41}, scores)["holds"]
    assert evaluate_check({"left": {**a, "metric": "spearman_r"}, "abs": True, "op": "<", "right": 0.3}, scores)["holds"]
    gap = {"gap_closed": {"start": b, "end": a, "value": b}, "at_least": 0.5}
    assert not evaluate_check(gap, scores)["holds"]
    finding = {"name": "n", "claim": "c", "paper": "p", "checks": [gap]}
    assert score_refs([finding]) == ["results/scores/m/d/s.json", "results/scores/m/d/t.json"]
    assert evaluate_findings([finding], scores)[0]["holds"] is False


def test_a_finding_on_an_unknown_model_is_named():
    check = {"left": {"model": "nope", "dataset": "d", "setting": "s"}, "op": ">", "right": 1}
    config = {"datasets": {}, "settings": {}, "report": {"findings": [{"name": "f1", "claim": "", "paper": "", "checks": [check]}]}}
    with pytest.raises(ValueError, match=r"report\.findings\[0\] \(f1\): unknown model 'nope'"):
        check_config(config)
