"""Family chat: any transformers image-text-to-text model prompted through its processor's chat template, run
through every evaluation of the paper on tiny random-weight models of each current architecture
(vlmrepro/demo/chat), by the same functions the workflow's scripts call."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlmrepro.demo.chat import BUILDERS
from vlmrepro.demo.tiny import build_tiny
from vlmrepro.evaluate import run_generation, without_reasoning
from vlmrepro.features import vlm_features
from vlmrepro.imagewikiqa import score_mcq
from vlmrepro.loglik import chat_class_token_ids, run_loglik
from vlmrepro.models import VisionLanguageModel
from vlmrepro.prompts import render
from vlmrepro.robustness import check_invariance
from vlmrepro.scoring import score_loglik, score_outputs

CLASSES = ["cat", "dog", "red bird"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-images")
    paths = []
    for k, size in enumerate([(32, 32), (48, 40), (40, 56)]):
        path = root / f"{k}.png"
        Image.new("RGB", size, (60 * k, 200 - 50 * k, 90)).save(path)
        paths.append(str(path))
    return paths


def run_of(arch: str, **extra) -> dict:
    return {"family": "chat", "model": f"tiny-{arch}", "template": "{question}", "dtype": "float32", "device": "cpu",
            "padding_side": "left", **extra}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def chat_model(request, tmp_path_factory):
    arch = request.param
    model_dir = tmp_path_factory.mktemp(f"tiny-{arch}")
    build_tiny("chat", model_dir, {"arch": arch, "seed": 0, "max_context": 4096})
    vlm, revision = VisionLanguageModel.for_job(model_dir, run_of(arch))
    return arch, model_dir, vlm


def queries_of(images, question="What is in the image?"):
    labels = ["cat", "dog", "red bird"]
    return [{"item": k, "row": k, "image": f"./{k}.png", "path": p, "label": labels[k], "choices": None,
             "question": question} for k, p in enumerate(images)]  # fmt: skip


def test_the_prompt_is_the_processors_chat_template_around_the_question(chat_model):
    arch, _, vlm = chat_model
    assert "{question}" in vlm.template and vlm.template != "{question}"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "{question}"}]}]
    assert vlm.template == vlm.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # chain of thought: the model's turn starts with the prompt's text after {assistant}
    cot = vlm.prompt_template("{question}{assistant}Let's think step by step.")
    assert cot.rstrip().endswith("Let's think step by step.") and cot.startswith(vlm.template.split("{question}")[0])
    assert vlm.generation_settings()["chat_prompt"] == vlm.template


def test_generation_open_closed_world_and_cot_in_any_batch(chat_model, images):
    arch, _, vlm = chat_model
    for question in ("What is in the image?", "What is this? Answer with one of: cat, dog, red bird."):
        queries = queries_of(images, question)
        one = run_generation(
            vlm, queries, vlm.template, "", 6, 1, "local", answer_from="generation", log=lambda _: None
        )
        batched = run_generation(
            vlm, queries, vlm.template, "", 6, 3, "local", answer_from="generation", log=lambda _: None
        )
        assert [r["status"] for r in one] == ["ok"] * 3
        assert [r["pred"] for r in one] == [r["pred"] for r in batched]  # left padding: no answer depends on its batch
        assert all(r["prompt"] == render(vlm.template, question) for r in one)
        assert score_outputs(one)["n_evaluated"] == 3
    cot = vlm.prompt_template("{question}{assistant}Let's think step by step.")
    records = run_generation(
        vlm, queries_of(images), cot, "", 4, 2, "local", answer_from="generation", log=lambda _: None
    )
    assert all(r["status"] == "ok" and isinstance(r["generation"], str) for r in records)


def test_auto_batch_size_counts_the_image_tokens_the_processor_gives(chat_model):
    """batch_size auto plans each item's KV cache: for a chat model the image's positions come from its processor
    (they grow with the image for Qwen2.5-VL and LLaVA-OneVision), never 0."""
    from vlmrepro.memory import image_tokens

    arch, _, vlm = chat_model
    prompt = render(vlm.template, "What is it?")
    for size in ((64, 64), (128, 96)):
        inputs = vlm.preprocess([Image.new("RGB", size)], [prompt])
        placeholders = int((inputs["input_ids"][0] == vlm.config.image_token_id).sum())
        counted = image_tokens(vlm.config, "chat", vlm, size)
        assert counted >= placeholders > 0  # every placeholder, plus any separators the processor adds


def test_a_prompt_past_the_context_is_not_evaluated(chat_model, images):
    arch, _, vlm = chat_model
    long_question = "Which one? " + ", ".join(f"class{k}" for k in range(vlm.max_context))
    records = run_generation(vlm, queries_of(images[:1], long_question), vlm.template, "", 4, 1, "local",
                             answer_from="generation", log=lambda _: None)  # fmt: skip
    assert records[0]["status"] == "context_overflow"


@pytest.mark.parametrize("answer_prefix", ["", "The photo features a"])
def test_probabilistic_inference_scores_each_class_after_the_chat_context(chat_model, images, answer_prefix):
    arch, _, vlm = chat_model
    queries = queries_of(images[:2])
    template = vlm.prompt_template("{question}{assistant}" + answer_prefix if answer_prefix else "{question}")
    records, arrays = run_loglik(vlm, queries, CLASSES, template, "continuation", "What is in the image?", 250,
                                 "local", log=lambda _: None)  # fmt: skip
    context = render(template, "What is in the image?")
    ids = chat_class_token_ids(vlm.tokenizer, context, CLASSES)
    assert (
        arrays["token_logprobs"].shape == (2, sum(len(i) for i in ids)) and np.isfinite(arrays["token_logprobs"]).all()
    )
    # the cached, cropped context gives what a fresh pass over the context's and the class's tokens gives
    image = Image.open(queries[1]["path"]).convert("RGB")
    context_inputs = vlm.encode([image], [context])
    for k in range(len(CLASSES)):
        inputs = dict(context_inputs)
        inputs["input_ids"] = torch.cat([context_inputs["input_ids"], torch.tensor([ids[k]])], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        if "token_type_ids" in inputs:  # Gemma 3 marks image tokens
            inputs["token_type_ids"] = torch.cat(
                [context_inputs["token_type_ids"], torch.zeros(1, len(ids[k]), dtype=torch.long)], dim=1
            )
        if "mm_token_type_ids" in inputs:
            inputs["mm_token_type_ids"] = torch.cat(
                [context_inputs["mm_token_type_ids"], torch.zeros(1, len(ids[k]), dtype=torch.long)], dim=1
            )
        with torch.inference_mode():
            logp = torch.log_softmax(vlm.model(**inputs).logits[0].float(), dim=-1)
        n = len(ids[k])
        expected = logp[-n - 1 : -1].gather(-1, torch.tensor(ids[k])[:, None])[:, 0].numpy()
        start = arrays["class_offsets"][k]
        np.testing.assert_allclose(arrays["token_logprobs"][1, start : start + n], expected, atol=2e-4)
    scores = score_loglik(records, arrays, alphas=[0])
    assert 0 <= scores["accuracy_sum"] <= 100


def test_features_at_last_average_and_a_position(chat_model, images):
    arch, _, vlm = chat_model
    opened = [Image.open(p).convert("RGB") for p in images]
    features, lengths, _ = vlm_features(vlm, opened, render(vlm.template, "What is in the image?"), ["last", "avg", -2])
    assert features.shape[:2] == (3, 3) and np.isfinite(features).all() and len(lengths) == 3


def test_imagewikiqa_answers_are_parsed_mmmu_style(chat_model, images):
    arch, _, vlm = chat_model
    question = "What does it eat? Answer with the option's letter.\nA. honey\nB. fish\nC. seeds\nD. grass"
    queries = queries_of(images, question)
    records = run_generation(
        vlm, queries, vlm.template, "", 4, 3, "local", answer_from="generation", log=lambda _: None
    )
    rows = [{**r, "question": question, "answer": "A"} for r in records]
    assert score_mcq(rows)["n_evaluated"] == 3


def test_robustness_check_runs_for_a_chat_model(chat_model, images, tmp_path):
    arch, _, vlm = chat_model
    run = run_of(arch, answer_marker="", max_new_tokens=4, answer_from="generation", min_new_tokens=0,
                 batch_size=2, max_batch_size=2, sort_block=2, loader_workers=0)  # fmt: skip
    queries = queries_of(images)
    reference = run_generation(
        vlm, queries, vlm.template, "", 4, 2, "local", answer_from="generation", log=lambda _: None
    )
    result = check_invariance(vlm, queries, reference, run, "local", 3, tmp_path, log=lambda _: None)
    assert result["batch_invariance"] == result["resume_invariance"] == 100


def test_reasoning_blocks_are_cut_from_the_scored_answer():
    tags = ["<think>", "</think>"]
    assert without_reasoning("<think>it has fur</think> A cat.", tags) == "A cat."
    assert without_reasoning("<think>still thinking", tags) == ""
    assert without_reasoning("A <think>x</think>cat", tags) == "A cat"
    assert without_reasoning("<think>x</think>", None) == "<think>x</think>"


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_chat_dir(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("tiny-chat-one")
    build_tiny("chat", model_dir, {"arch": "internvl", "seed": 0})
    return model_dir


def test_a_processor_without_chat_template_is_refused_naming_the_model(one_chat_dir, tmp_path):
    import shutil

    broken = tmp_path / "no-template"
    shutil.copytree(one_chat_dir, broken)
    (broken / "chat_template.jinja").unlink(missing_ok=True)
    (broken / "chat_template.json").unlink(missing_ok=True)
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = broken / name
        if path.exists():
            data = json.loads(path.read_text())
            data.pop("chat_template", None)
            path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="model tiny-x: its processor has no chat template"):
        VisionLanguageModel.for_job(broken, run_of("x"))


def test_a_model_that_is_not_image_text_to_text_is_refused(tmp_path):
    from vlmrepro.demo.tiny import build_tiny_llm

    build_tiny_llm(tmp_path / "llm")
    with pytest.raises(ValueError, match="model tiny-x: .* not an image-text-to-text model"):
        VisionLanguageModel.for_job(tmp_path / "llm", run_of("x"))


def test_remote_code_runs_only_on_an_explicit_opt_in(one_chat_dir, tmp_path):
    import shutil

    custom = tmp_path / "custom"
    shutil.copytree(one_chat_dir, custom)
    config = json.loads((custom / "config.json").read_text())
    config |= {"model_type": "my_custom_vlm", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model tiny-x: .* runs code from its hub repository.*trust_remote_code: true"):
        VisionLanguageModel.for_job(custom, run_of("x"))


def test_a_siglip_shaped_open_clip_model_classifies_zero_shot(tmp_path, images):
    from vlmrepro.evaluate import run_clip_zero_shot
    from vlmrepro.models import ClipModel

    build_tiny("open_clip", tmp_path / "siglip", {"seed": 0, "siglip": True})
    config = json.loads((tmp_path / "siglip" / "open_clip_config.json").read_text())
    assert config["model_cfg"]["init_logit_bias"] == -10.0 and config["model_cfg"]["text_cfg"]["no_causal_mask"]
    clip = ClipModel(tmp_path / "siglip", "float32", "cpu")
    assert type(clip.model).__name__ == "CustomTextCLIP"
    records = run_clip_zero_shot(
        clip, queries_of(images), CLASSES, "a photo of a {label}.", 2, "local", log=lambda _: None
    )
    assert [r["status"] for r in records] == ["ok"] * 3 and all(r["pred"] in CLASSES for r in records)


def test_multimodal_rotary_positions_are_left_to_the_model(tmp_path):
    """Qwen places text after an image at positions derived from the image's grid: with an image of many patches,
    packed classes at explicit positions would score differently; each class over the cache scores as a fresh pass."""
    build_tiny("chat", tmp_path / "qwen", {"arch": "qwen2_5_vl", "seed": 0, "max_context": 4096, "image_size": 112})
    vlm, _ = VisionLanguageModel.for_job(tmp_path / "qwen", run_of("qwen2_5_vl"))
    assert vlm.multimodal_positions
    path = tmp_path / "large.png"
    Image.new("RGB", (112, 96), (10, 200, 30)).save(path)
    query = {"item": 0, "row": 0, "image": "./large.png", "path": str(path), "label": "cat", "choices": None}
    template = vlm.prompt_template("{question}{assistant}The photo features a")
    _, arrays = run_loglik(
        vlm, [query], CLASSES, template, "continuation", "What is it?", 250, "local", log=lambda _: None
    )
    context = render(template, "What is it?")
    ids = chat_class_token_ids(vlm.tokenizer, context, CLASSES)
    inputs = vlm.encode([Image.open(path).convert("RGB")], [context])
    for k in range(len(CLASSES)):
        full = dict(inputs)
        full["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([ids[k]])], dim=1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        for key in ("token_type_ids", "mm_token_type_ids"):  # image-token marks, none for the class's tokens
            if key in full:
                full[key] = torch.cat([inputs[key], torch.zeros(1, len(ids[k]), dtype=inputs[key].dtype)], dim=1)
        with torch.inference_mode():
            logp = torch.log_softmax(vlm.model(**full).logits[0].float(), dim=-1)
        n, start = len(ids[k]), arrays["class_offsets"][k]
        expected = logp[-n - 1 : -1].gather(-1, torch.tensor(ids[k])[:, None])[:, 0].numpy()
        np.testing.assert_allclose(arrays["token_logprobs"][0, start : start + n], expected, atol=2e-4)
