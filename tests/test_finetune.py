"""Fine-tuning recipes on tiny real models: what they train, that the loss falls on a learnable task, resume and
divergence handling."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vlmrepro.finetune import blip_caption_label, run, trained_parameter_names, prepare_model
from vlmrepro.scoring import blip_caption_correct, exact_correct

PROMPT = "USER: <image>\nWhat type of object is in the photo? ASSISTANT:"


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """Two visually opposite classes: learnable from the image alone."""
    folder = tmp_path_factory.mktemp("ft")
    out = []
    for i in range(16):
        label = "red circle" if i % 2 else "blue square"
        colour = (230, 20, 20) if i % 2 else (20, 20, 230)
        path = folder / f"{i}.png"
        Image.fromarray(np.full((32, 32, 3), colour, dtype=np.uint8)).save(path)
        out.append({"path": str(path), "segments": [[PROMPT, label]]})
    return out


def job(tmp_path, base, family, trainable, examples, **kw):
    return {
        "device": "cpu", "base_dir": str(base), "family": family, "dtype": "float32", "trainable": trainable,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "examples": examples, "prompt": PROMPT, "global_batch": 8,
        "per_device_batch": 8, "epochs": 4, "lr": 3e-3, "projector_lr": 3e-3, "warmup_ratio": 0.0, "seed": 42,
        "checkpoint_dir": str(tmp_path / "ckpt"), "out_dir": str(tmp_path / "out"), "base_revision": "local",
        # the schema's defaults (the LLaVA code base's recipe)
        "schedule": "cosine", "warmup_steps": 1000, "warmup_start_lr": 1e-8, "min_lr": 0.0, "weight_decay": 0.0,
        "tf32": True, "image_aspect_ratio": "pad", "group_by_modality_length": True, "image_size": None,
        "augment": "none", **kw,
    }


def changed_tensors(base, tuned):
    a, b = load_file(f"{base}/model.safetensors"), load_file(f"{tuned}/model.safetensors")
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_projector_only_trains_the_projector_and_loss_falls(tiny_models, examples, tmp_path):
    log = run(job(tmp_path, tiny_models / "llava", "llava", "projector", examples))
    losses = [l["loss"] for l in log["losses"]]
    assert losses[-1] < losses[0] and not log["diverged"]
    changed = changed_tensors(tiny_models / "llava", tmp_path / "out")
    assert changed and all("multi_modal_projector" in k for k in changed)
    assert (tmp_path / "out" / "REVISION").read_text().startswith("finetuned:")


def test_lora_trains_projector_and_language_model_linears_only(tiny_models, examples, tmp_path):
    run(job(tmp_path, tiny_models / "llava", "llava", "projector+lora", examples))
    changed = changed_tensors(tiny_models / "llava", tmp_path / "out")
    assert any("multi_modal_projector" in k for k in changed)
    assert any("language_model" in k and "proj" in k for k in changed)
    assert not any("vision_tower" in k or "embed_tokens" in k or "lm_head" in k or "norm" in k for k in changed)


def test_qformer_recipe_trains_only_the_qformer_side(tiny_models, examples, tmp_path):
    captions = [dict(e, segments=[["a photo of", blip_caption_label(e["segments"][0][1])]]) for e in examples]
    run(job(tmp_path, tiny_models / "blip2", "blip2", "qformer", captions, prompt="a photo of", answer_prefix=" "))
    changed = changed_tensors(tiny_models / "blip2", tmp_path / "out")
    assert changed and all(("qformer" in k or "query_tokens" in k or "language_projection" in k) for k in changed)


def test_identical_rerun_resumes_from_the_last_checkpoint(tiny_models, examples, tmp_path):
    """A job killed after its last checkpoint (here: its output removed) resumes instead of training again."""
    import shutil

    first = run(job(tmp_path, tiny_models / "llava", "llava", "projector", examples, epochs=2))
    shutil.rmtree(tmp_path / "out")
    checkpoints = sorted(p.name for p in (tmp_path / "ckpt").glob("checkpoint-*"))
    again = run(job(tmp_path, tiny_models / "llava", "llava", "projector", examples, epochs=2))
    assert checkpoints and again["losses"] == first["losses"]  # the trainer state came back; no step was redone
    assert changed_tensors(tiny_models / "llava", tmp_path / "out")  # the trained weights, not the base model's


class KilledDuringSave(Exception):
    pass


@pytest.mark.parametrize("phase", ["model", "optimizer and scheduler", "rng state", "trainer state"])
def test_a_save_killed_in_any_phase_resumes_from_the_last_complete_checkpoint(
    tiny_models, examples, tmp_path, monkeypatch, phase
):
    """A kill (or a full disk) while the second checkpoint is written leaves a half-written folder: the rerun
    discards it and resumes from the first, complete checkpoint, and trains what an uninterrupted run trains."""
    from transformers import Trainer, TrainerState

    def spec(folder):
        return job(tmp_path / folder, tiny_models / "llava", "llava", "projector", examples, epochs=2)

    uninterrupted = run(spec("whole"))
    saves = []

    def killed_on_second_save(original, truncate_json=False):
        def wrapper(self, path, *args, **kwargs):
            saves.append(path)
            if len(saves) < 2:
                return original(self, path, *args, **kwargs)
            if truncate_json:  # the trainer state half-written
                Path(path).write_text('{"global_step": 4, "log_hist')
            else:
                original(self, path, *args, **kwargs)
            raise KilledDuringSave(phase)

        return wrapper

    target = {
        "model": (Trainer, "save_model"),
        "optimizer and scheduler": (Trainer, "_save_optimizer_and_scheduler"),
        "rng state": (Trainer, "_save_rng_state"),
        "trainer state": (TrainerState, "save_to_json"),
    }[phase]
    monkeypatch.setattr(*target, killed_on_second_save(getattr(*target), truncate_json=phase == "trainer state"))
    with pytest.raises(KilledDuringSave):
        run(spec("killed"))
    monkeypatch.undo()
    folders = sorted(p.name for p in (tmp_path / "killed" / "ckpt").glob("checkpoint-*"))
    assert folders == ["checkpoint-2", "checkpoint-4"]  # the complete first, the half-written second
    assert not (tmp_path / "killed" / "ckpt" / "checkpoint-4" / "COMPLETE").exists()

    resumed = run(spec("killed"))
    assert resumed["losses"] == uninterrupted["losses"]  # epoch 1 from the checkpoint, epoch 2 trained again
    assert sorted(p.name for p in (tmp_path / "killed" / "ckpt").glob("checkpoint-*")) == ["checkpoint-4"]
    assert not changed_tensors(tmp_path / "whole" / "out", tmp_path / "killed" / "out")  # the same weights


def test_a_full_disk_while_saving_the_model_names_it_and_leaves_no_part_folder(
    tiny_models, examples, tmp_path, monkeypatch
):
    import errno

    from transformers import LlavaForConditionalGeneration

    save = LlavaForConditionalGeneration.save_pretrained

    def full_disk_at(where):
        def save_pretrained(self, path, *args, **kwargs):
            if where not in str(path):
                return save(self, path, *args, **kwargs)
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")

        return save_pretrained

    for where, named in [("checkpoint-", tmp_path / "ckpt"), ("out.part", tmp_path / "out")]:
        monkeypatch.setattr(LlavaForConditionalGeneration, "save_pretrained", full_disk_at(where))
        with pytest.raises(OSError) as info:
            run(job(tmp_path, tiny_models / "llava", "llava", "projector", examples, epochs=1))
        assert info.value.errno == errno.ENOSPC and str(named) in str(info.value)
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.part").exists()


def test_diverging_loss_is_recorded_not_raised(tiny_models, examples, tmp_path):
    """A model whose projector overflows (as a diverged run does) trains on with NaN losses, flagged, not raised."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(tiny_models / "llava")
    with torch.no_grad():
        model.model.multi_modal_projector.linear_1.weight.fill_(float("inf"))
    model.save_pretrained(tmp_path / "broken")
    AutoProcessor.from_pretrained(tiny_models / "llava").save_pretrained(tmp_path / "broken")
    log = run(job(tmp_path, tmp_path / "broken", "llava", "projector", examples, epochs=1))
    assert log["diverged"] and any(np.isnan(l["loss"]) for l in log["losses"])


def test_trainable_sets_are_exclusive(tiny_models):
    from transformers import LlavaForConditionalGeneration

    model = prepare_model(LlavaForConditionalGeneration.from_pretrained(tiny_models / "llava"), "projector", None)
    assert all("multi_modal_projector" in n for n in trained_parameter_names(model))
    with pytest.raises(ValueError, match="trainable"):
        prepare_model(model, "everything", None)


def test_caption_normalisation_and_fine_tuned_scoring_rules():
    assert blip_caption_label("St. Bernard") == "st bernard"
    assert blip_caption_label("kite (bird of prey)") == "kite bird of prey"
    assert not blip_caption_correct("St. Bernard", "a photo of st bernard")  # docs/protocol.md#blip-2-caption-rule
    assert blip_caption_correct("kite (bird of prey)", "kite bird of prey")
    assert exact_correct("Goldfish", " goldfish ") and not exact_correct("goldfish", "goldfish.")


def test_changed_recipe_does_not_resume_old_checkpoints(tiny_models, examples, tmp_path):
    run(job(tmp_path, tiny_models / "llava", "llava", "projector", examples, epochs=2))
    other = run(job(tmp_path, tiny_models / "llava", "llava", "projector", examples, epochs=2, lr=1e-3, projector_lr=1e-3))
    assert len(other["losses"]) == 2 * (len(examples) // 8)  # trained from the start, not resumed


def test_global_batch_must_fit_the_devices(tiny_models, examples, tmp_path):
    with pytest.raises(ValueError, match="global_batch 12"):
        run(job(tmp_path, tiny_models / "llava", "llava", "projector", examples, global_batch=12))


def test_gradient_checkpointing_trains_the_same_parts(tiny_models, examples, tmp_path):
    log = run(job(tmp_path, tiny_models / "llava", "llava", "projector", examples, epochs=2, gradient_checkpointing=True))
    assert log["losses"][-1]["loss"] < log["losses"][0]["loss"]
    assert all("multi_modal_projector" in k for k in changed_tensors(tiny_models / "llava", tmp_path / "out"))


def test_instruction_mix_trains_on_multi_turn_and_text_only_examples(tiny_models, examples, tmp_path):
    """The ImageNet + LLaVA mix: image and text-only conversations in one batch; loss only on the answers."""
    from transformers import AutoProcessor

    from vlmrepro.finetune import Conversations, make_collator
    from vlmrepro.instruction_mix import conversation_segments

    turns = [
        {"from": "human", "value": "What is two plus two?"},
        {"from": "gpt", "value": "four"},
        {"from": "human", "value": "And three plus three?"},
        {"from": "gpt", "value": "six"},
    ]
    text_only = {"path": None, "segments": conversation_segments(turns, "A chat.")}
    assert text_only["segments"][0][0] == "A chat. USER: What is two plus two? ASSISTANT:"
    assert text_only["segments"][1][0] == "USER: And three plus three? ASSISTANT:"
    mix = [e for pair in zip(examples, [text_only] * len(examples)) for e in pair]
    processor = AutoProcessor.from_pretrained(tiny_models / "llava")
    batch = make_collator(processor)([Conversations(mix)[0], Conversations(mix)[1]])
    assert batch["pixel_values"].shape[0] == 1  # only the image example brings pixels
    tok = processor.tokenizer
    answer_ids = batch["labels"][1][batch["labels"][1] != -100].tolist()
    assert tok.decode(answer_ids, skip_special_tokens=True).split() == ["four", "six"]
    log = run(job(tmp_path, tiny_models / "llava", "llava", "projector", mix, epochs=2))
    assert not log["diverged"] and len(log["losses"]) == 2 * len(mix) // 8
    # a batch of text-only records never reaches the projector: it must still train (zero gradient), not fail
    log = run(job(tmp_path / "text", tiny_models / "llava", "llava", "projector", [text_only] * 8, epochs=1))
    assert len(log["losses"]) == 1


def test_save_steps_checkpoints_within_an_epoch(tiny_models, examples, tmp_path):
    """The one-epoch mix run checkpoints every save_steps optimiser steps, so a killed job resumes mid-epoch."""
    from transformers.trainer_utils import get_last_checkpoint

    log = run(job(tmp_path, tiny_models / "llava", "llava", "projector", examples, epochs=1, save_steps=1))
    assert len(log["losses"]) == 2
    assert get_last_checkpoint(str(tmp_path / "ckpt")).endswith("checkpoint-2")


def test_checkpoints_of_an_earlier_base_model_are_discarded(tmp_path):
    """A base model rebuilt by its rule (same recipe, new weights) must not resume the old base's checkpoints."""
    import os

    from vlmrepro.finetune import _discard_checkpoints_of_other_settings

    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"old")
    job = {"base_dir": str(base), "checkpoint_dir": str(tmp_path / "ckpt"), "lr": 1e-3, "examples": []}
    _discard_checkpoints_of_other_settings(job)
    (tmp_path / "ckpt" / "checkpoint-5").mkdir()
    _discard_checkpoints_of_other_settings(job)
    assert (tmp_path / "ckpt" / "checkpoint-5").is_dir()  # same recipe, same base: resumed
    (base / "model.safetensors").write_bytes(b"new")
    os.utime(base / "model.safetensors", ns=(1, 1))
    _discard_checkpoints_of_other_settings(job)
    assert not (tmp_path / "ckpt" / "checkpoint-5").exists()


def test_lora_fine_tune_is_the_same_run_after_run(tiny_models, examples, tmp_path):
    """LoRA's adapters are initialised from the recipe's seed: two runs train the same model (they were drawn from
    whatever state the global generator was in)."""
    torch.manual_seed(0)
    first = run(job(tmp_path / "a", tiny_models / "llava", "llava", "projector+lora", examples, epochs=1))
    torch.rand(7)  # another generator state, as in another process
    second = run(job(tmp_path / "b", tiny_models / "llava", "llava", "projector+lora", examples, epochs=1))
    assert first["losses"] == second["losses"]
    assert not changed_tensors(tmp_path / "a" / "out", tmp_path / "b" / "out")


# --- recipe details as upstream ran them (docs/protocol.md#training-hyperparameters) ---------------------------------


def test_lavis_schedule_warms_up_in_the_first_epoch_then_steps_its_cosine_per_epoch():
    from vlmrepro.finetune import lavis_warmup_cosine

    args = dict(steps_per_epoch=2000, epochs=3, init_lr=2e-5, min_lr=0.0, warmup_steps=1000, warmup_start_lr=1e-8)
    lr = [lavis_warmup_cosine(step, **args) for step in range(6000)]
    assert lr[0] == pytest.approx(1e-8)
    assert lr[999] == pytest.approx(1e-8 + (2e-5 - 1e-8) * 999 / 1000)
    assert lr[1000] == lr[1999] == pytest.approx(2e-5)  # held to the end of the first epoch
    assert lr[2000:4000] == pytest.approx([2e-5 * 0.75] * 2000)  # epoch 1: cos(pi / 3), the same at every step
    assert lr[-1] == pytest.approx(2e-5 * 0.25)  # the last epoch: cos(2 pi / 3); min_lr is reached only after it


def test_weight_decay_spares_biases_norms_and_1d_parameters_as_lavis(tiny_models):
    from vlmrepro.finetune import parameter_groups
    from vlmrepro.models import model_class

    model = prepare_model(model_class("blip2").from_pretrained(tiny_models / "blip2"), "qformer", None)
    groups = {g["weight_decay"]: g for g in parameter_groups(model, {"lr": 2e-5, "projector_lr": 2e-5, "weight_decay": 0.05})}
    assert set(groups) == {0.0, 0.05}
    params = dict(model.named_parameters())
    assert all(params[n].ndim >= 2 and "bias" not in n and "ln" not in n for n in groups[0.05]["names"])
    assert all(params[n].ndim < 2 or "bias" in n or "ln" in n or "bn" in n for n in groups[0.0]["names"])
    assert "query_tokens" in groups[0.05]["names"]  # 3-D: decayed, as LAVIS's rule has it
    assert any("layernorm" in n for n in groups[0.0]["names"]) and any(n.endswith("bias") for n in groups[0.0]["names"])
    trained = {n for n, p in params.items() if p.requires_grad}
    assert set(groups[0.0]["names"]) | set(groups[0.05]["names"]) == trained


def test_pad_to_square_centres_the_image_on_the_processors_mean_colour(tiny_models, tmp_path):
    from transformers import AutoProcessor

    from vlmrepro.datasets import pad_to_square, processor_mean_colour
    from vlmrepro.models import VisionLanguageModel

    pixels = np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8)  # 40 wide, 20 high
    image = Image.fromarray(pixels)
    processor = AutoProcessor.from_pretrained(tiny_models / "llava")
    fill = processor_mean_colour(processor.image_processor)
    expected = np.empty((40, 40, 3), dtype=np.uint8)  # computed independently: rows 10..29 hold the image
    expected[:] = [int(m * 255) for m in processor.image_processor.image_mean]
    expected[10:30] = pixels
    assert np.array_equal(np.asarray(pad_to_square(image, fill)), expected)
    assert pad_to_square(image.crop((0, 0, 20, 20)), fill).size == (20, 20)  # a square image is left as it is
    prompt = "USER: <image>\nWhat is it?\nASSISTANT:"
    reference = processor(images=[Image.fromarray(expected)], text=[prompt], return_tensors="pt")["pixel_values"]
    padded = VisionLanguageModel(tiny_models / "llava", "llava", device="cpu", image_aspect_ratio="pad")
    assert torch.equal(padded.preprocess([image], [prompt])["pixel_values"], reference)
    plain = VisionLanguageModel(tiny_models / "llava", "llava", device="cpu")  # the base models' HF processor path
    assert not torch.equal(plain.preprocess([image], [prompt])["pixel_values"], reference)


def test_lavis_recipe_reaches_the_trainer_and_is_written_beside_the_weights(tiny_models, examples, tmp_path):
    from vlmrepro.finetune import lavis_warmup_cosine

    captions = [dict(e, segments=[["a photo of", blip_caption_label(e["segments"][0][1])]]) for e in examples]
    recipe = dict(schedule="lavis_warmup_cosine", warmup_steps=3, lr=1e-3, min_lr=0.0, weight_decay=0.05,
                  tf32=False, image_aspect_ratio="original", group_by_modality_length=False, per_device_batch=4,
                  global_batch=4, epochs=2)  # fmt: skip
    log = run(job(tmp_path, tiny_models / "blip2", "blip2", "qformer", captions, prompt="a photo of", answer_prefix=" ", **recipe))
    written = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert json.loads((tmp_path / "ckpt" / "recipe.json").read_text()) == written  # beside the checkpoints too
    assert written["steps_per_epoch"] == 4 and written["schedule"] == "lavis_warmup_cosine"
    assert {g["weight_decay"] for g in written["parameter_groups"]} == {0.0, 0.05}
    assert written["job"]["warmup_steps"] == 3 and written["image_padding_colour"] is None and written["tf32"] is False
    state = json.loads(next((tmp_path / "ckpt").glob("checkpoint-*/trainer_state.json")).read_text())
    logged = [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e]
    args = dict(steps_per_epoch=4, epochs=2, init_lr=1e-3, min_lr=0.0, warmup_steps=3, warmup_start_lr=1e-8)
    assert logged == pytest.approx([lavis_warmup_cosine(step, **args) for step in range(len(logged))])
    assert len(log["losses"]) == 8


def test_modality_length_grouping_keeps_image_and_text_batches_apart():
    from vlmrepro.finetune import ModalityLengthSampler, modality_length_grouped_indices, modality_lengths

    examples = [{"path": f"{i}.png" if i % 3 else None, "segments": [["q " * (1 + i % 7), "a"]]} for i in range(50)]
    lengths = modality_lengths(examples)
    assert lengths[0] < 0 < lengths[1] and abs(lengths[0]) == 2
    order = modality_length_grouped_indices(lengths, 4, 2, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(50))
    megabatches = [order[i : i + 8] for i in range(0, len(order), 8)]
    *full, last = megabatches
    for megabatch in full:  # one modality each (the leftovers of both share the last)
        assert len({lengths[k] > 0 for k in megabatch}) == 1
        for batch in (megabatch[:4], megabatch[4:]):  # each process's batch: longest first
            words = [abs(lengths[k]) for k in batch]
            assert words == sorted(words, reverse=True)
    sampler = ModalityLengthSampler(lengths, 4, 2, seed=42)
    first = list(sampler)
    assert list(sampler) == first  # the same epoch, the same order (a resumed job)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(50))
    images_only = modality_length_grouped_indices([abs(v) for v in lengths], 4, 1, torch.Generator().manual_seed(0))
    for i in range(0, 48, 4):  # length grouping alone: each batch sorted longest first
        batch = [abs(lengths[k]) for k in images_only[i : i + 4]]
        assert batch == sorted(batch, reverse=True)


def test_blip2_recipe_trains_and_evaluates_at_a_larger_size_with_interpolated_positions(tiny_models, examples, tmp_path):
    """LAVIS's 364 px at tiny scale: 48 px against the tower's 32, random resized crops in training."""
    from vlmrepro.evaluate import run_generation
    from vlmrepro.models import VisionLanguageModel

    captions = [dict(e, segments=[["a photo of", blip_caption_label(e["segments"][0][1])]]) for e in examples]
    larger = dict(image_size=48, augment="lavis_random_resized_crop", image_aspect_ratio="original", epochs=1)
    run(job(tmp_path, tiny_models / "blip2", "blip2", "qformer", captions, prompt="a photo of", answer_prefix=" ", **larger))
    tuned = VisionLanguageModel(tmp_path / "out", "blip2", device="cpu")
    assert tuned.interpolate_pos_encoding and tuned.generation_settings()["interpolate_pos_encoding"]
    image = Image.open(examples[0]["path"])
    assert tuned.preprocess([image], ["a photo of"])["pixel_values"].shape[-2:] == (48, 48)  # a bicubic resize
    query = {"item": 0, "row": 0, "image": "x", "label": "red circle", "choices": None, "question": "a photo of",
             "path": examples[0]["path"]}  # fmt: skip
    record = run_generation(tuned, [query], "{question}", "a photo of", 4, 1, "r", log=lambda _: None)[0]
    assert record["status"] == "ok"  # generation at 48 px: the position grid interpolated (else a shape error)
    base = VisionLanguageModel(tiny_models / "blip2", "blip2", device="cpu")
    assert not base.interpolate_pos_encoding
    with pytest.raises(ValueError, match="image_size is a BLIP-2 recipe setting"):
        run(job(tmp_path / "llava", tiny_models / "llava", "llava", "projector", examples, image_size=48))


def test_lora_merged_onto_the_plain_language_model_is_its_weights_plus_the_adapters(tiny_models, examples, tmp_path):
    """Upstream merged its LoRA adapters onto lmsys/vicuna-7b-v1.5 (docs/protocol.md#llava-fine-tuning): the merged
    language model is the plain LLM's weights + ΔLoRA; vision tower and projector as trained."""
    from vlmrepro.demo.tiny import build_tiny

    build_tiny("llm", tmp_path / "vicuna", {"seed": 7})
    recipe = dict(epochs=1, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    run(job(tmp_path / "trained", tiny_models / "llava", "llava", "projector+lora", examples, **recipe))
    run(job(tmp_path / "plain", tiny_models / "llava", "llava", "projector+lora", examples, **recipe,
            merge_base_dir=str(tmp_path / "vicuna")))  # fmt: skip
    base = load_file(tiny_models / "llava" / "model.safetensors")
    trained = load_file(tmp_path / "trained" / "out" / "model.safetensors")  # LLaVA's LM + ΔLoRA (the same run)
    plain = load_file(tmp_path / "plain" / "out" / "model.safetensors")
    vicuna = load_file(tmp_path / "vicuna" / "model.safetensors")
    assert trained.keys() == plain.keys()
    adapted = 0
    for name, weight in plain.items():  # saved in llava-hf's layout: language_model.model.* and language_model.lm_head
        if name.startswith("language_model."):
            source = vicuna[name.removeprefix("language_model.")]
            delta = trained[name] - base[name]  # ΔLoRA (zero where no adapter)
            adapted += bool(delta.abs().max() > 0)
            rows = source.shape[0]
            assert torch.allclose(weight[:rows], source + delta[:rows], atol=1e-6), name
            assert torch.equal(weight[rows:], trained[name][rows:]), name  # llava-hf's added tokens keep their rows
        else:  # vision tower and projector: as trained
            assert torch.equal(weight, trained[name]), name
    assert adapted >= 7 * 2  # every targeted linear of both layers moved


def test_evaluation_after_every_epoch_keeps_the_best_epochs_weights(tiny_models, examples, tmp_path, monkeypatch):
    """LAVIS validated after every epoch and the paper reports the best: each epoch is evaluated through the
    ordinary generation loop and scoring rule, and the best epoch's weights become the fine-tuned model."""
    import vlmrepro.scoring
    from vlmrepro.io import write_jsonl

    queries = [{"item": i, "row": i, "image": f"{i}.png", "label": blip_caption_label(e["segments"][0][1]),
                "choices": None, "question": "a photo of", "path": e["path"]} for i, e in enumerate(examples)]  # fmt: skip
    write_jsonl(tmp_path / "queries.jsonl", queries)
    evaluation = {"family": "blip2", "template": "{question}", "answer_marker": "a photo of", "answer_from": "generation",
                  "dtype": "float32", "device": "cpu", "padding_side": "left", "batch_size": 8, "max_new_tokens": 6}  # fmt: skip
    captions = [dict(e, segments=[["a photo of", blip_caption_label(e["segments"][0][1])]]) for e in examples]
    epoch_eval = {"setting": "finetuned_caption_eval", "run": evaluation, "rule": "blip_caption",
                  "queries": str(tmp_path / "queries.jsonl")}  # fmt: skip
    # the tiny model answers nothing right in 3 epochs: script the scores to see which epoch is kept
    scripted, real = iter([10.0, 50.0, 30.0]), vlmrepro.scoring.score_outputs
    seen = []

    def score(records, **kw):
        seen.append(records)
        return {**real(records, **kw), "accuracy": next(scripted)}

    monkeypatch.setattr(vlmrepro.scoring, "score_outputs", score)
    log = run(job(tmp_path, tiny_models / "blip2", "blip2", "qformer", captions, prompt="a photo of", answer_prefix=" ",
                  image_aspect_ratio="original", epochs=3, epoch_eval=epoch_eval))  # fmt: skip
    assert [(e["epoch"], e["accuracy"]) for e in log["epochs"]] == [(1, 10.0), (2, 50.0), (3, 30.0)]
    assert log["best_epoch"] == 2 and log["accuracy_last_epoch"] == 30.0
    assert len(seen) == 3 and all(len(r) == len(queries) and r[0]["status"] == "ok" for r in seen)  # the real loop
    tuned = load_file(tmp_path / "out" / "model.safetensors")
    best = load_file(tmp_path / "ckpt" / "best-epoch" / "model.safetensors")
    last = load_file(next((tmp_path / "ckpt").glob("checkpoint-6")) / "model.safetensors")
    name = "qformer.layernorm.weight"
    assert torch.equal(tuned[name], best[name]) and not torch.equal(tuned[name], last[name])


def test_every_answer_ends_with_the_token_generation_stops_at(tiny_models, examples):
    """BLIP-2's OPT stops generating at a newline (its text config's EOS, 50118 in facebook/opt), and LAVIS trains on
    caption + "\\n": an answer ending in </s> would teach a stop the generation never makes."""
    from transformers import AutoConfig, AutoProcessor

    from vlmrepro.finetune import Conversations, make_collator, stop_token

    processor = AutoProcessor.from_pretrained(tiny_models / "blip2")
    config = AutoConfig.from_pretrained(tiny_models / "blip2")
    newline = processor.tokenizer.convert_tokens_to_ids("Ċ")
    assert stop_token(config) == processor.tokenizer.eos_token_id  # the tiny model stops at </s>, as LLaVA does
    config.text_config.eos_token_id = newline  # Salesforce/blip2-opt-2.7b's
    caption = [{**examples[0], "segments": [["a photo of", " blue square"]]}]
    batch = make_collator(processor, stop_token_id=stop_token(config))([Conversations(caption)[0]])
    answer = [t for t in batch["labels"][0].tolist() if t != -100]
    assert answer[-1] == newline and processor.tokenizer.eos_token_id not in answer
    assert processor.tokenizer.decode(answer) == " blue square\n"


def test_training_images_replaced_under_the_same_names_retrain_and_rename_the_model(tiny_models, examples, tmp_path):
    """The fine-tuned model is keyed by its training images' contents: replacing them (same paths, new hashes, as a
    rerun split records them) neither resumes the old checkpoints nor keeps the old revision, which every cache key
    of its evaluation names."""
    import shutil

    hashed = [dict(e, sha256=f"{i:064x}") for i, e in enumerate(examples)]
    first = run(job(tmp_path, tiny_models / "llava", "llava", "projector", hashed, epochs=2))
    old_revision = (tmp_path / "out" / "REVISION").read_text()
    shutil.rmtree(tmp_path / "out")
    replaced = [dict(e, sha256=f"{i + 1:064x}") for i, e in enumerate(examples)]
    again = run(job(tmp_path, tiny_models / "llava", "llava", "projector", replaced, epochs=2))
    assert len(again["losses"]) == len(first["losses"]) == 2 * (len(examples) // 8)  # trained from the start
    assert (tmp_path / "out" / "REVISION").read_text() != old_revision


def test_training_identity_covers_recipe_base_revision_and_image_contents_not_locations(tmp_path):
    from vlmrepro.finetune import finetune_job, training_identity

    base = tmp_path / "base"
    base.mkdir()
    (base / "REVISION").write_text("abc\n")
    queries = tmp_path / "train.jsonl"
    rows = [{"item": 0, "path": "/data/a.png", "label": "cat", "sha256": "1" * 64}]
    queries.write_text(json.dumps(rows[0]) + "\n")

    def identity(params=None, where="x", sha="1" * 64, revision="abc"):
        (base / "REVISION").write_text(revision + "\n")
        queries.write_text(json.dumps(dict(rows[0], sha256=sha)) + "\n")
        spec = finetune_job(
            {"prompt": PROMPT, "answer": "label", "epoch_eval": None, "lr": 1e-3, **(params or {})},
            {"base": str(base), "queries": str(queries)},
            family="llava", device="cpu", checkpoint_dir=f"{where}/ckpt", out_dir=f"{where}/out",
            log_file=f"{where}/log", workers=2,
        )  # fmt: skip
        assert spec["examples"][0]["sha256"] == sha
        return training_identity(spec)

    same = identity()
    assert identity(where="elsewhere") == same  # where it runs and writes is not what it is
    assert len({same, identity(sha="2" * 64), identity(revision="def"), identity({"lr": 2e-3})}) == 4
