"""Tiny real models of every family through the same loaders and evaluation loops as the paper's models."""

import numpy as np
import pytest
from PIL import Image

from vlmrepro.backends import read_revision
from vlmrepro.evaluate import run_clip_zero_shot, run_generation
from vlmrepro.models import ClipModel, VisionLanguageModel
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
    from vlmrepro.demo.tiny import build_tiny

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
    from vlmrepro.demo.tiny import build_tiny

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


def test_clip_class_prompts_past_the_text_context_are_listed_and_shown_on_the_page(tiny_models):
    """CLIP's tokenizer cuts a prompt at its context (77 tokens; the tiny model's 32), as upstream's did: kept,
    but the score lists the classes and the cell's note says so."""
    import pandas as pd

    from vlmrepro.tables import build_table

    clip = ClipModel(tiny_models / "open_clip", device="cpu")
    long = "very " * 40 + "red circle"
    assert clip.truncated_classes([*CLASSES, long, long], "A photo of a {label}.") == [
        {"class": long, "tokens": 49, "context": 32}  # start, "a photo of a", 40 x "very", "red circle", ".", end
    ]
    score = {"accuracy": 50.0, "n_items": 2, "n_evaluated": 2, "truncated_classes": [{"class": long, "tokens": 47, "context": 32}]}
    cell = {"model": "m", "paper_model": "M", "dataset": "d", "paper_dataset": "d", "setting": "s", "paper_setting": "s"}
    paper = pd.DataFrame(columns=["table", "model", "dataset", "setting", "metric", "value", "note"])
    note = build_table([{**cell, "score": score}], paper, "T").iloc[0]["note"]
    assert note.startswith("1 class prompt(s) cut at 32 tokens (scored cut, as upstream): 'very very")


def test_clip_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        ClipModel(tmp_path)


def test_hub_download_failure_names_the_model(tmp_path):
    from vlmrepro.hub import download_snapshot

    with pytest.raises(RuntimeError, match="llava-hf/llava-1.5-7b-hf@main"):
        download_snapshot("llava-hf/llava-1.5-7b-hf", "main", tmp_path / "model")
    assert not (tmp_path / "model").exists()


def _upstream_loop(model_dir, queries, template, marker, batch_size, max_new_tokens):
    """main_results/main.py's loop, written plainly: the checkpoint's processor as saved (its padding side), batches
    of ``batch_size`` in plan order, prompt + generation decoded, the text after the last marker."""
    import torch
    import transformers

    processor = transformers.Blip2Processor.from_pretrained(model_dir)
    model = transformers.Blip2ForConditionalGeneration.from_pretrained(model_dir).eval()
    preds = []
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size]
        prompts = [template.replace("{question}", q["question"]) for q in batch]
        images = [Image.open(q["path"]).convert("RGB") for q in batch]
        inputs = processor(text=prompts, images=images, padding=True, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens)
        preds += [text.split(marker)[-1].strip() for text in processor.batch_decode(output, skip_special_tokens=True)]
    return preds


@pytest.fixture(scope="module")
def right_padded(tmp_path_factory):
    """A tiny BLIP-2 whose saved tokenizer pads on the right, as Salesforce/blip2-opt-2.7b's does, and 16 closed-world
    queries whose prompts differ in length (3 candidates of different names)."""
    from vlmrepro.demo.tiny import build_tiny

    model_dir = tmp_path_factory.mktemp("right-padded") / "blip2"
    build_tiny("blip2", model_dir, {"padding_side": "right", "tokenizer": "real"})
    folder = tmp_path_factory.mktemp("images16")
    rows = []
    for i in range(16):
        path = folder / f"{i}.png"
        Image.fromarray(np.random.default_rng(100 + i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        rows.append({"row": i, "image": f"./t/{i}.png", "path": str(path), "label": CLASSES[i % 5], "split": "test"})
    return model_dir, plan_queries(rows, CLASSES, "What type of object is in this photo?", 1234, candidates=3)


def _greedy_with_mask_positions(vlm, queries, template, batch_size, steps):
    """Greedy decoding written out plainly with transformers 4.40's positions: every step runs the whole sequence
    again, each token placed at its position among its row's unmasked tokens (OPT's pads at -1). Returns the new
    token ids per item."""
    import torch

    from vlmrepro.models import mask_positions

    tokens = []
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size]
        images = [Image.open(q["path"]).convert("RGB") for q in batch]
        inputs = vlm.preprocess(images, [template.replace("{question}", q["question"]) for q in batch])
        ids, mask, new = inputs["input_ids"], inputs["attention_mask"], []
        with torch.no_grad():
            for _ in range(steps):
                logits = vlm.model(pixel_values=inputs["pixel_values"], input_ids=ids, attention_mask=mask,
                                   position_ids=mask_positions(mask, -1)).logits  # fmt: skip
                token = logits[:, -1].argmax(-1, keepdim=True)
                new.append(token)
                ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
        tokens += torch.cat(new, 1).tolist()
    return tokens


def test_right_padded_rows_generate_at_their_real_positions_as_transformers_4_40_did(right_padded):
    """transformers 5 continues a right-padded row from its last column's position (a pad's), 4.40 from the running
    mask: under batching upstream our rows must get 4.40's tokens (benchmarks/ORACLE.md checks it against 4.40)."""
    model_dir, queries = right_padded
    template, marker = TEMPLATES["blip2"]
    vlm = VisionLanguageModel(model_dir, "blip2", device="cpu", padding_side="checkpoint")
    assert vlm.padding_side == "right" and vlm.generation_settings()["padding_side"] == "right"
    expected = _greedy_with_mask_positions(vlm, queries, template, 8, 6)
    records = run_generation(vlm, queries, template, marker, 6, batch_size=8, revision="r", log=lambda _: None)
    assert [r["generation"] for r in records] == [vlm.tokenizer.decode(t, skip_special_tokens=True) for t in expected]
    first = queries[:8]
    inputs = vlm.encode([Image.open(q["path"]).convert("RGB") for q in first],
                        [template.replace("{question}", q["question"]) for q in first])  # fmt: skip
    plain = vlm.model.generate(**inputs, max_new_tokens=6, do_sample=False)[:, -6:].tolist()  # transformers 5's positions
    assert plain != expected[:8]  # without the fix some right-padded row continues elsewhere
    assert {r["padding_side"] for r in records} == {"right"}  # recorded in every row


def test_fast_batching_answers_do_not_depend_on_batch_mates(right_padded):
    model_dir, queries = right_padded
    template, marker = TEMPLATES["blip2"]
    vlm = VisionLanguageModel(model_dir, "blip2", device="cpu", padding_side="left")
    one = run_generation(vlm, queries, template, marker, 6, batch_size=1, revision="r", log=lambda _: None)
    sorted_eights = run_generation(vlm, queries, template, marker, 6, batch_size=8, revision="r", log=lambda _: None,
                                   sort_block=16)  # fmt: skip
    assert [r["pred"] for r in one] == [r["pred"] for r in sorted_eights]
    assert {r["padding_side"] for r in sorted_eights} == {"left"}
    assert [r["pred"] for r in one] == _upstream_loop(model_dir, queries, template, marker, 1, 6)  # nothing padded


def test_unknown_padding_side_is_a_clear_error(tiny_models):
    with pytest.raises(ValueError, match="padding_side must be one of"):
        VisionLanguageModel(tiny_models / "blip2", "blip2", device="cpu", padding_side="middle")


def test_min_new_tokens_forbids_an_immediate_end_of_sequence(tiny_models, rows):
    """LAVIS's min_len 1: the fine-tuned BLIP-2's caption may not end before its first token."""
    template, marker = TEMPLATES["blip2"]
    vlm = VisionLanguageModel(tiny_models / "blip2", "blip2", device="cpu")
    queries = plan_queries(rows[:1], CLASSES, "What type of object is in this photo?", 1234, candidates=None)
    inputs = vlm.to_device(vlm.preprocess([Image.open(rows[0]["path"]).convert("RGB")], [template.replace("{question}", queries[0]["question"])]))
    first = vlm.model.generate(**inputs, max_new_tokens=1, do_sample=False)[0, -1].item()
    for model in (vlm.model, vlm.model.language_model):  # BLIP-2 generates through its language model's config
        model.generation_config.eos_token_id = first  # the greedy first token now ends the sequence at once
    quiet = {"revision": "r", "log": lambda _: None, "answer_from": "generation"}
    ended = vlm.tokenizer.decode([first]).strip()
    assert run_generation(vlm, queries, template, marker, 4, 1, **quiet)[0]["generation"].strip() == ended  # stopped at once
    forced = run_generation(vlm, queries, template, marker, 4, 1, min_new_tokens=1, **quiet)[0]["generation"]
    assert forced and not forced.startswith(ended)  # the first token had to be another one


def test_clip_uint8_pixels_scaled_on_the_device_equal_the_float_preprocessing(tiny_models, rows):
    """The loader ships uint8 pixels (a quarter of the bytes); scaling and normalising them where the model runs
    gives the preprocessing's exact values (same float32 operations)."""
    import torch

    clip = ClipModel(tiny_models / "open_clip", device="cpu")
    images = [Image.open(r["path"]).convert("RGB") for r in rows]
    small = torch.stack([clip.uint8_pixels(image) for image in images])
    assert small.dtype == torch.uint8 and small.shape[1] == 3
    floats = torch.stack([clip.preprocess(image) for image in images])
    assert torch.equal(clip.encode_images(small), clip.encode_images(floats))


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_static_kv_cache_gives_the_dynamic_caches_tokens(family, tiny_models, rows):
    """kv_cache static (compiled on a GPU) must not change an answer: in float32 on the CPU the tokens are equal."""
    from vlmrepro.models import pick_kv_cache

    template, marker = TEMPLATES[family]
    queries = plan_queries(rows, CLASSES, "What type of object is in this photo?", 1234, candidates=3)
    outputs = {}
    for kv_cache in ("dynamic", "static"):
        vlm = VisionLanguageModel(tiny_models / family, family, device="cpu", kv_cache=kv_cache)
        assert vlm.generation_settings()["kv_cache"] == kv_cache
        records = run_generation(vlm, queries, template, marker, 6, batch_size=3, revision="r", log=lambda _: None)
        outputs[kv_cache] = [r["output"] for r in records]
    assert outputs["static"] == outputs["dynamic"]
    # one cache per batch size, reused by every batch of that size (the compiled decoding step sees one buffer)
    sizes = {len(queries[i : i + 3]) for i in range(0, len(queries), 3)}
    assert sorted(vlm.static_caches) == sorted(sizes) and vlm.static_cache_allocations == len(sizes) < len(queries) / 3
    assert pick_kv_cache("auto", family, "cuda") == "static" and pick_kv_cache("auto", family, "cpu") == "dynamic"
    assert pick_kv_cache("auto", "blip2", "cuda") == "dynamic"


def test_an_instruction_beyond_the_qformer_positions_is_not_evaluable_and_named(tiny_models, rows):
    """InstructBLIP's Q-Former reads the prompt through 512 positions: a longer instruction (StanfordCars' closed
    world) is recorded as context_overflow with the reason, where upstream's run crashed, and the others run."""
    long_names = [f"car model {i} sedan coupe" for i in range(150)]  # > 512 WordPiece tokens in one list
    vlm = VisionLanguageModel(tiny_models / "instructblip", "instructblip", device="cpu")
    assert vlm.qformer_positions == 512 and vlm.max_context == 512
    closed = plan_queries([dict(r, label=long_names[r["row"]]) for r in rows], long_names, "What?", 1234,
                          candidates="all")  # fmt: skip
    short = plan_queries(rows, CLASSES, "What?", 1234, candidates=2)
    template, marker = TEMPLATES["instructblip"]
    assert vlm.prompt_token_lower_bounds([template.replace("{question}", closed[0]["question"])])[0] > 512
    vlm.max_context = 100_000  # the language model's context holds it: only the Q-Former's limit is left
    records = run_generation(vlm, closed[:2] + short[2:], template, marker, 3, batch_size=4, revision="r",
                             log=lambda _: None)  # fmt: skip
    assert [r["status"] for r in records] == ["context_overflow"] * 2 + ["ok"] * (len(rows) - 2)
    assert "more than the Q-Former's 512 positions" in records[0]["reason"]


@pytest.mark.parametrize("family", ["llava", "blip2"])
def test_a_checkpoint_revision_from_before_the_image_token_update_loads_and_answers_the_same(family, tiny_models, rows, tmp_path):
    """The paper ran the llava-hf and Salesforce revisions from before their processors expanded the image token:
    without those processor keys (and BLIP-2's image_token_index) the model is completed from its own config and
    answers as the current layout does."""
    import json
    import shutil

    old = tmp_path / family
    shutil.copytree(tiny_models / family, old)
    processor_config = json.loads((old / "processor_config.json").read_text())
    for key in ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "num_query_tokens"):
        processor_config.pop(key, None)
    (old / "processor_config.json").write_text(json.dumps(processor_config))
    if family == "blip2":  # Salesforce's config had no image token either (llava-hf's always had one)
        config = json.loads((old / "config.json").read_text())
        config.pop("image_token_index")
        (old / "config.json").write_text(json.dumps(config))
    template, marker = TEMPLATES[family]
    queries = plan_queries(rows, CLASSES, "What type of object is in this photo?", 1234, candidates=3)
    answers = {}
    for name, folder in (("current", tiny_models / family), ("paper-era", old)):
        vlm = VisionLanguageModel(folder, family, device="cpu")
        records = run_generation(vlm, queries, template, marker, 5, batch_size=3, revision="r", log=lambda _: None)
        answers[name] = [r["output"] for r in records]
        assert bool(vlm.completed_layout) == (name == "paper-era")
    assert answers["paper-era"] == answers["current"]


def test_an_image_token_past_the_vocabulary_gets_an_input_row_but_no_output_column(tiny_models):
    """Paper-era InstructBLIP has no <image> token: the one the processor adds lands after Vicuna's rows."""
    import copy

    import torch
    import transformers

    from vlmrepro.models import fit_image_token_row

    model = transformers.InstructBlipForConditionalGeneration.from_pretrained(tiny_models / "instructblip")
    rows, columns = model.get_input_embeddings().num_embeddings, model.get_output_embeddings().out_features
    config = copy.deepcopy(model.config)
    config.image_token_index = rows + 1
    before = model.get_input_embeddings().weight.detach().clone()
    fit_image_token_row(model, config)
    grown = model.get_input_embeddings().weight
    assert grown.shape[0] == rows + 2 and model.get_output_embeddings().out_features == columns
    assert torch.equal(grown[:rows], before) and not grown[rows:].any()


def test_llava_next_tiles_are_padded_as_transformers_4_40_padded_them(tiny_models):
    """An odd leftover (a 32 x 90 image in a 32 x 64 canvas) was split floor/floor by 4.40, one pixel short, and
    the tiles resized back; later versions pad it to full width. A square image has no leftover: both agree."""
    import torch

    tall, square = Image.new("RGB", (32, 90), (200, 30, 30)), Image.new("RGB", (32, 32), (30, 200, 30))
    for pixel in range(0, 90, 3):  # a pattern, so that a shifted tile differs
        tall.putpixel((pixel % 32, pixel), (0, 0, 255))
    pixels = {}
    for padding in ("upstream", "centered"):
        vlm = VisionLanguageModel(tiny_models / "llava_next", "llava_next", device="cpu", anyres_padding=padding,
                                  image_backend="pil")  # fmt: skip
        pixels[padding] = [vlm.preprocess([image], ["[INST] <image>\nWhat?[/INST]"])["pixel_values"] for image in (tall, square)]
        assert vlm.generation_settings()["anyres_padding"] == padding
    assert not torch.equal(pixels["upstream"][0], pixels["centered"][0])
    assert torch.equal(pixels["upstream"][1], pixels["centered"][1])
