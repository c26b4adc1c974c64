"""The throughput levers change no result: sorted blocks, prefetching threads, batch size from free memory, and the
vLLM backend's text assembly."""

import json
import sys

import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image

from vlmrepro.backends import load_generator
from vlmrepro.evaluate import generation_batches, run_generation
from vlmrepro.memory import GIB, choose_batch_size, image_tokens, parameter_count, per_item_bytes, resolve_batch_size
from vlmrepro.models import VisionLanguageModel
from vlmrepro.queries import plan_queries

TEMPLATE, MARKER = "USER: <image>\n{question}\nASSISTANT:", "ASSISTANT:"
CLASSES = ["red circle", "blue square", "green triangle", "ant", "elephant"]


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rows = []
    for i in range(11):
        path = folder / f"{i}.png"
        size = (24 + 9 * (i % 4), 30 + 5 * (i % 3))
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)
        rows.append({"row": i, "image": f"./t/{i}.png", "path": str(path), "label": CLASSES[i % 5], "split": "test"})
    # closed-world questions: candidate lists of different lengths make prompts of different lengths
    return plan_queries(rows, CLASSES, "What type of object is in this photo?", 1234, candidates="all")


@pytest.fixture(scope="module")
def llava(tiny_models):
    return VisionLanguageModel(tiny_models / "llava", "llava", device="cpu")


def test_sorted_blocks_and_prefetching_return_the_unoptimised_results(llava, queries):
    quiet = dict(revision="r", log=lambda _: None)
    upstream = run_generation(llava, queries, TEMPLATE, MARKER, 5, batch_size=3, **quiet)
    ours = run_generation(llava, queries, TEMPLATE, MARKER, 5, batch_size=4, sort_block=8, loader_workers=2, **quiet)
    assert [r["item"] for r in ours] == [q["item"] for q in queries]  # plan order restored
    assert ours == upstream


def test_batches_stay_inside_their_blocks_and_sort_by_key():
    keys = [5, 1, 4, 1, 3, 9, 2, 0]
    batches = generation_batches([0, 1, 2, 3, 5, 6, 7], keys, batch_size=2, sort_block=4)
    assert batches == [[1, 3], [2, 0], [7, 6], [5]]  # item 4 is not to do; ties keep plan order
    # a shard is whole blocks: its batches are the same as in the unsharded job
    assert generation_batches([5, 6, 7], keys, 2, 4) == batches[2:]


def test_batch_size_from_free_memory_for_the_7b_architecture():
    config = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
            patch_size=14,
        ),
        text_config=tf.LlamaConfig(
            vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        ),
        image_seq_length=576,
    )  # fmt: skip
    params = parameter_count(config, "llava")
    assert 7.0e9 < params < 7.1e9  # counted on the meta device, nothing allocated
    per_item = per_item_bytes(config, "llava", image_tokens(config, "llava") + 40 + 20, dtype_bytes=2)
    assert 0.3 * GIB < per_item < 0.6 * GIB  # ~0.33 GiB of KV cache + activations
    on_24gb = choose_batch_size("llava-1.5-7b", 2 * params, per_item, free=int(23.5 * GIB), max_batch=256)
    assert 4 <= on_24gb <= 32  # a 7B evaluation fits a 24 GB card
    assert choose_batch_size("llava-1.5-7b", 2 * params, per_item, free=80 * GIB, max_batch=256) > 4 * on_24gb
    with pytest.raises(MemoryError, match=r"'llava-1.5-7b' does not fit this GPU even at batch size 1.*GiB"):
        choose_batch_size("llava-1.5-7b", 2 * params, per_item, free=12 * GIB, max_batch=256)


def test_llava_next_image_tokens_cover_the_largest_grid():
    config = tf.LlavaNextConfig(
        vision_config=tf.CLIPVisionConfig(image_size=336, patch_size=14),
        text_config=tf.LlamaConfig(),
        image_grid_pinpoints=[[336, 672], [672, 672]],
    )
    assert image_tokens(config, "llava_next") == 576 * 5 + 24 * 2


def test_auto_batch_size_on_the_cpu_is_the_cap(llava):
    run = {"batch_size": "auto", "max_batch_size": 12, "max_new_tokens": 5, "model": "tiny"}
    assert resolve_batch_size(llava, run, ["x"]) == 12
    assert resolve_batch_size(llava, {**run, "batch_size": 3}, ["x"]) == 3


def test_vllm_backend_assembles_the_transformers_text_from_the_same_tokens(tiny_models, llava, queries):
    """The CPU-checkable half of the vLLM backend: same prompt and image per request, same overflow lengths, and
    the same decoded text (hence the same parsed answer) for the same generated tokens."""
    import torch

    from vlmrepro.evaluate import load_rgb
    from vlmrepro.prompts import extract_answer, render

    run = {"backend": "vllm", "family": "llava", "dtype": "bfloat16", "device": "cpu", "model": "tiny-llava"}
    served, revision = load_generator(tiny_models / "llava", run)
    assert revision == "local" and served.generation_settings()["backend"] == "vllm"
    # the engine takes a whole job in one call (it schedules the requests itself), never one batch at a time
    assert resolve_batch_size(served, {"batch_size": 8, "max_batch_size": 256}, ["x"] * 700) == 700
    batch = queries[:4]
    images, prompts = [load_rgb(q["path"]) for q in batch], [render(TEMPLATE, q["question"]) for q in batch]
    requests = served.preprocess(images, prompts)
    assert [r["prompt"] for r in requests.requests] == prompts
    assert all(r["multi_modal_data"]["image"] is img for r, img in zip(requests.requests, images))
    hf_inputs = llava.encode(images, prompts)
    assert served.input_lengths(requests) == llava.input_lengths(hf_inputs)
    with torch.inference_mode():
        ids = llava.model.generate(**hf_inputs, max_new_tokens=6, do_sample=False)
    hf_texts = llava.processor.batch_decode(ids, skip_special_tokens=True)
    generated = [row[hf_inputs["input_ids"].shape[1] :].tolist() for row in ids]
    texts = served.decode(requests, generated)
    assert texts == hf_texts
    assert [extract_answer(t, MARKER) for t in texts] == [extract_answer(t, MARKER) for t in hf_texts]
    # the generation alone (what fine-tuned models are scored on): the same text from both backends' token ids
    served_new = served.processor.batch_decode(generated, skip_special_tokens=True)
    assert [g.new_text for g in llava.generate(hf_inputs, 6)] == served_new


def test_vllm_backend_errors_name_the_model(tiny_models, monkeypatch):
    from vlmrepro.vllm_backend import VllmModel

    with pytest.raises(ValueError, match="tiny-blip.*vLLM backend serves"):
        VllmModel(tiny_models / "blip2", "blip2", device="cpu", name="tiny-blip")
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    served = VllmModel(tiny_models / "llava", "llava", device="cpu", name="tiny-llava")
    with pytest.raises(RuntimeError, match="'tiny-llava' is configured with backend: vllm.*pip install vllm"):
        served.llm


def test_generation_params_carry_the_throughput_settings():
    config = json.loads(json.dumps(__import__("yaml").safe_load(open("config.yaml"))))
    llava = config["models"]["llava-1.5-7b"]
    assert llava["batch_size"] == "auto" and llava["sort_block"] >= 256 and llava["loader_workers"] > 0


def test_clip_loader_workers_return_the_same_predictions(tiny_models, queries):
    from vlmrepro.evaluate import run_clip_zero_shot
    from vlmrepro.models import ClipModel

    clip = ClipModel(tiny_models / "open_clip", device="cpu")
    args = (clip, queries, CLASSES, "a photo of a {label}.")
    inline = run_clip_zero_shot(*args, batch_size=3, revision="r", log=lambda _: None)
    loaded = run_clip_zero_shot(*args, batch_size=4, revision="r", log=lambda _: None, loader_workers=2)
    assert loaded == inline and all(r["status"] == "ok" for r in loaded)


def test_long_jobs_log_items_done_rate_and_time_left(tiny_models, queries):
    """Progress a user can `tail -f` on a cluster: whole lines at an interval (and at the end), from tqdm's meter."""
    from vlmrepro.progress import Progress

    lines = []
    progress = Progress(10, "generate", lines.append, interval=0.0)
    for _ in range(4):
        progress.update(2)
    assert len(lines) == 4 and lines[-1].startswith("generate:  80%") and "8/10" in lines[-1] and "<" in lines[-1]
    quiet = Progress(10, "generate", lines.append)  # the default interval: only the last line within 30 s
    for _ in range(10):
        quiet.update()
    assert len(lines) == 5 and "10/10" in lines[-1] and "\r" not in "".join(lines)
    log = []
    run_generation(VisionLanguageModel(tiny_models / "llava", "llava", device="cpu"), queries, TEMPLATE, MARKER, 3,
                   batch_size=4, revision="r", log=log.append)  # fmt: skip
    assert log[-1].startswith("generate: 100%") and f"{len(queries)}/{len(queries)}" in log[-1]


def test_clip_loader_batches_are_small_and_join_into_the_model_batches():
    from vlmrepro.evaluate import _joined, loader_batch

    assert [loader_batch(n) for n in (512, 128, 100, 24, 97)] == [32, 32, 25, 24, 1]
    loader = [torch.full((25,), k) for k in range(9)] + [torch.full((3,), 9)]  # 228 items in loader batches
    joined = list(_joined(loader, 100))
    assert [len(b) for b in joined] == [100, 100, 28] and torch.equal(torch.cat(joined), torch.cat(loader))
