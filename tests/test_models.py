"""Tiny real models of every family through the same loaders and evaluation loops as the paper's models."""

import numpy as np
import pytest
from PIL import Image

from vlmrepro.evaluate import run_clip_zero_shot, run_generation
from vlmrepro.models import ClipModel, VisionLanguageModel, read_revision
from vlmrepro.queries import plan_queries

TEMPLATES = {
    "llava": ("USER: <image>\n{question}\nASSISTANT:", "ASSISTANT:"),
    "llava_next": ("[INST] <image>\n{question}[/INST]", "[/INST]"),
    "blip2": ("Question: {question} Answer:", "Answer:"),
    "instructblip": ("Question: {question} Answer:", "Answer:"),
}
CLASSES = ["red circle", "blue square", "green triangle", "ant", "elephant", "ant"]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i in range(6):
        path = folder / f"{i}.png"
        size = (40 + 8 * i, 32)  # varied aspect ratios (LLaVA-NeXT image-token counts depend on them)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)
        out.append({"row": i, "image": f"./data/t/{i}.png", "path": str(path), "label": CLASSES[i % 5], "split": "test"})
    return out


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_generation_through_the_hub_loader(family, tiny_models, rows):
    template, marker = TEMPLATES[family]
    vlm = VisionLanguageModel(tiny_models / family, family, dtype="bfloat16", device="cpu")
    assert vlm.dtype.is_floating_point and str(vlm.dtype) == "torch.float32"  # CPU path runs in fp32
    queries = plan_queries(rows, CLASSES, "What type of object is in this photo?", 1234, candidates=3)
    records = run_generation(vlm, queries, template, marker, max_new_tokens=4, batch_size=4, revision="local", log=lambda _: None)
    assert [r["item"] for r in records] == list(range(len(rows)))
    for record, query in zip(records, queries):
        assert record["status"] == "ok"
        assert record["prompt"] == template.replace("{question}", query["question"])
        assert record["pred"] == record["output"].split(marker)[-1].strip()
        assert record["model_revision"] == "local"


def test_batching_does_not_change_greedy_outputs(tiny_models, rows):
    template, marker = TEMPLATES["llava"]
    vlm = VisionLanguageModel(tiny_models / "llava", "llava", device="cpu")
    queries = plan_queries(rows, CLASSES, "What type of object is in this photo?", 1234, candidates=3)
    one = run_generation(vlm, queries, template, marker, 6, batch_size=1, revision="r", log=lambda _: None)
    many = run_generation(vlm, queries, template, marker, 6, batch_size=6, revision="r", log=lambda _: None)
    assert [r["pred"] for r in one] == [r["pred"] for r in many]


def test_prompt_beyond_context_is_na_and_never_loads_the_weights(tiny_models, rows, tmp_path):
    from vlmrepro.tiny import build_tiny

    build_tiny("llava", tmp_path / "short", {"max_context": 48})
    vlm = VisionLanguageModel(tmp_path / "short", "llava", device="cpu")
    many = [f"class number {i}" for i in range(40)]
    queries = plan_queries([dict(r, label=many[r["row"]]) for r in rows], many, "What is it?", 1234, candidates="all")
    records = run_generation(vlm, queries, *TEMPLATES["llava"], max_new_tokens=4, batch_size=2, revision="r", log=lambda _: None)
    assert {r["status"] for r in records} == {"context_overflow"}
    assert "context of 48" in records[0]["reason"]
    assert vlm._model is None


def test_overflow_found_only_after_image_expansion_is_na_per_item(tiny_models, rows, tmp_path):
    """Text alone fits, but the 16 image tokens do not: caught per item from the processor's real lengths."""
    from vlmrepro.tiny import build_tiny

    build_tiny("llava", tmp_path / "tight", {"max_context": 30})
    vlm = VisionLanguageModel(tmp_path / "tight", "llava", device="cpu")
    queries = plan_queries(rows, CLASSES, "What?", 1234)
    lower = vlm.prompt_token_lower_bounds([TEMPLATES["llava"][0].replace("{question}", "What?")])[0]
    assert lower + 4 <= 30 < lower + 4 + 15
    records = run_generation(vlm, queries, *TEMPLATES["llava"], max_new_tokens=4, batch_size=3, revision="r", log=lambda _: None)
    assert {r["status"] for r in records} == {"context_overflow"}


def test_skipped_images_are_recorded_not_opened(tiny_models, rows):
    vlm = VisionLanguageModel(tiny_models / "blip2", "blip2", device="cpu")
    broken = [dict(r) for r in rows]
    broken[0].update(path="/nonexistent.png", skip="missing")
    queries = plan_queries(broken, CLASSES, "What?", 1234)
    records = run_generation(vlm, queries, *TEMPLATES["blip2"], max_new_tokens=2, batch_size=8, revision="r", log=lambda _: None)
    skipped = [r for r in records if r["row"] == 0]
    assert skipped[0]["status"] == "skipped_image" and skipped[0]["reason"] == "missing"
    assert sum(r["status"] == "ok" for r in records) == len(rows) - 1


def test_clip_zero_shot_argmax_over_all_entries_and_over_candidates(tiny_models, rows):
    clip = ClipModel(tiny_models / "open_clip", device="cpu")
    assert read_revision(tiny_models / "open_clip") == "local"
    open_plan = plan_queries(rows, CLASSES, "", 1234)
    records = run_clip_zero_shot(clip, open_plan, CLASSES, "A photo of a {label}", 4, "local")
    assert all(r["status"] == "ok" and r["pred"] in CLASSES for r in records)
    k_plan = plan_queries(rows, CLASSES, "", 1234, candidates=2)
    records = run_clip_zero_shot(clip, k_plan, CLASSES, "A photo of a {label}", 4, "local")
    assert all(r["pred"] in q["choices"] for r, q in zip(records, k_plan))


def test_clip_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        ClipModel(tmp_path)


def test_hub_download_failure_names_the_model(tmp_path):
    from vlmrepro.hub import download_snapshot

    with pytest.raises(RuntimeError, match="llava-hf/llava-1.5-7b-hf@main"):
        download_snapshot("llava-hf/llava-1.5-7b-hf", "main", tmp_path / "model")
    assert not (tmp_path / "model").exists()
