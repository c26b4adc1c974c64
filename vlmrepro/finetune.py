"""Fine-tuning on classification conversations with Hugging Face tools (docs/protocol.md#table-3-right-fine-tuning,
docs/protocol.md#training-hyperparameters).

* ``projector``: LLaVA's multi-modal projector only (recipe ``llava-proj``).
* ``projector+lora``: the projector plus LoRA adapters on every linear layer of the language model (``llava-lora``),
  merged into the weights when training ends.
* ``qformer``: BLIP-2's Q-Former, query tokens and language projection (``blip2-qformer``), on captions
  "a photo of <label>".

The loss covers only the answer tokens and the end-of-sequence token. Training runs through ``transformers.Trainer``
(so ``torchrun``/``accelerate`` give multi-GPU data parallelism), checkpoints every epoch into a folder outside the
declared outputs and resumes from the newest *complete* one when a killed job is rerun (a checkpoint is marked
complete once every part of it is written; see :class:`MarkCompleteCheckpoints`). The loss curve is kept; a
diverging loss is recorded (NaN), not raised.

The workflow's job is built by :func:`finetune_job` and started by :func:`launch`: in its own process, or over
several GPUs as ``python -m vlmrepro.finetune job.json`` under ``torchrun`` (the job file holds every argument).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from .backends import read_revision
from .cache import cache_key
from .datasets import processor_mean_colour
from .gpus import run_holding_gpus
from .instruction_mix import image_of
from .io import atomic_dir, naming_full_disk, read_jsonl, write_json, write_text

TRAINABLE = {
    "projector": re.compile(r"multi_modal_projector"),
    "projector+lora": re.compile(r"multi_modal_projector"),
    "qformer": re.compile(r"qformer|query_tokens|language_projection"),
}
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|fc1|fc2|out_proj)"


def blip_caption_label(label: str) -> str:
    """LAVIS BlipCaptionProcessor.pre_caption: lower-case, these characters to spaces, spaces collapsed, 50 words."""
    text = re.sub(r"([.!\"()*#:;~])", " ", label.lower())
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:50])


def image_transform(job: dict, pad_fill: tuple[int, ...] | None):
    """What happens to a training image before the processor: LLaVA's pad-to-square onto ``pad_fill``
    (``image_aspect_ratio pad``), LAVIS's ``blip2_image_train`` augmentation (a random crop of 50-100 % of the area
    resized to ``image_size``, bicubic, flipped at random; the processor then only normalises), or nothing."""
    from functools import partial

    from .datasets import pad_to_square

    if job["augment"] == "lavis_random_resized_crop":
        from torchvision import transforms

        crop = transforms.RandomResizedCrop(
            job["image_size"], scale=(0.5, 1.0), interpolation=transforms.InterpolationMode.BICUBIC
        )
        return transforms.Compose([crop, transforms.RandomHorizontalFlip()])
    if pad_fill is not None:
        return partial(pad_to_square, fill=pad_fill)
    return None


class Conversations(torch.utils.data.Dataset):
    """Examples ``{"path": image or None, "segments": [[prompt, answer], ...]}``; images are opened lazily in
    data-loader workers and passed through ``transform`` (:func:`image_transform`)."""

    def __init__(self, examples: list[dict], transform=None, group_by_modality_length=False):
        self.examples, self.transform = examples, transform
        self.group_by_modality_length = group_by_modality_length  # read by the Trainer's sampler

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        from .evaluate import load_rgb

        example = self.examples[i]
        if example["path"] is None:  # text-only instruction data
            return {"image": None, "segments": example["segments"]}
        image = load_rgb(example["path"])
        return {"image": image if self.transform is None else self.transform(image), "segments": example["segments"]}


def stop_token(config) -> int:
    """The token the model's generation stops at, which every training answer must end with: the language model's
    EOS. For LLaVA that is </s>; BLIP-2's OPT stops at a newline (50118), and LAVIS trains on caption + "\n" for it
    (docs/protocol.md#blip-2-fine-tuning-text); a </s> there would never be generated, and every caption would run
    to the length limit."""
    eos = config.text_config.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


def make_collator(processor, answer_prefix: str = "", model_inputs: dict | None = None, stop_token_id: int | None = None):
    """Per segment: prompt ids (the first through the processor, which expands image placeholders) + answer ids +
    the stop token; labels mask the prompts. Answers are tokenised on their own and concatenated, so no merge happens
    across a boundary. Examples without an image add no pixels (the model places image features by placeholder
    count). ``model_inputs`` go into every batch (``interpolate_pos_encoding`` for images larger than the vision
    tower's). ``stop_token_id``: the token generation stops at (:func:`stop_token`), the tokenizer's EOS if None."""
    tok = processor.tokenizer
    stop = tok.eos_token_id if stop_token_id is None else stop_token_id

    def collate(batch):
        seqs, labels, pixels, sizes = [], [], [], []
        for ex in batch:
            ids, mask = [], []
            for k, (prompt, answer) in enumerate(ex["segments"]):
                if k == 0 and ex["image"] is not None:
                    enc = processor(images=[ex["image"]], text=[prompt], return_tensors="pt")
                    prompt_ids = enc["input_ids"][0].tolist()
                    pixels.append(enc["pixel_values"][0])
                    if "image_sizes" in enc:  # LLaVA-NeXT
                        sizes.append(enc["image_sizes"])
                else:
                    prompt_ids = tok(prompt, add_special_tokens=k == 0)["input_ids"]
                answer_ids = tok(answer_prefix + answer, add_special_tokens=False)["input_ids"] + [stop]
                ids += prompt_ids + answer_ids
                mask += [-100] * len(prompt_ids) + answer_ids
            seqs.append(ids)
            labels.append(mask)
        width = max(len(s) for s in seqs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = {
            "input_ids": torch.tensor([s + [pad] * (width - len(s)) for s in seqs]),
            "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
            "labels": torch.tensor([l + [-100] * (width - len(l)) for l in labels]),
        }
        if pixels:
            out["pixel_values"] = torch.stack(pixels)
        if sizes:
            out["image_sizes"] = torch.cat(sizes)
        return {**out, **(model_inputs or {})}

    return collate


def modality_lengths(examples: list[dict]) -> list[int]:
    """LLaVA's ``modality_lengths``: the words of a record's turns, negative for a text-only record."""
    lengths = []
    for example in examples:
        words = max(sum(len(text.split()) for segment in example["segments"] for text in segment), 1)
        lengths.append(words if example["path"] is not None else -words)
    return lengths


def _even_chunks(indices: list[int], lengths: list[int], n_chunks: int) -> list[list[int]]:
    """A megabatch split into one batch per process, longest first into the batch with the fewest words so far."""
    if len(indices) % n_chunks:
        return [indices[i::n_chunks] for i in range(n_chunks)]
    size = len(indices) // n_chunks
    chunks, words = [[] for _ in range(n_chunks)], [0] * n_chunks
    for index in indices:
        shortest = words.index(min(words))
        chunks[shortest].append(index)
        words[shortest] += lengths[index]
        if len(chunks[shortest]) == size:
            words[shortest] = float("inf")
    return chunks


def _length_grouped(lengths: list[int], batch_size: int, world: int, generator) -> list[int]:
    """Shuffled, then each megabatch (one batch per process) sorted longest first and split evenly."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    mega = world * batch_size
    megabatches = [sorted(order[i : i + mega], key=lambda k: lengths[k], reverse=True) for i in range(0, len(order), mega)]
    return [k for megabatch in megabatches for chunk in _even_chunks(megabatch, lengths, world) for k in chunk]


def modality_length_grouped_indices(lengths: list[int], batch_size: int, world: int, generator) -> list[int]:
    """The LLaVA code base's ``group_by_modality_length`` order: megabatches of image records and megabatches of
    text-only records, each grouped by length, in a shuffled order; the two leftovers form the last megabatch."""
    if all(length > 0 for length in lengths) or all(length < 0 for length in lengths):
        return _length_grouped([abs(length) for length in lengths], batch_size, world, generator)
    image = [(i, length) for i, length in enumerate(lengths) if length > 0]
    text = [(i, -length) for i, length in enumerate(lengths) if length < 0]
    mega = world * batch_size
    megabatches = []
    for members in (image, text):
        order = [members[k][0] for k in _length_grouped([m[1] for m in members], batch_size, world, generator)]
        megabatches.append([order[i : i + mega] for i in range(0, len(order), mega)])
    (*image_full, image_last), (*text_full, text_last) = megabatches
    full = image_full + text_full
    shuffled = [full[k] for k in torch.randperm(len(full), generator=generator).tolist()]
    leftover = sorted(image_last + text_last)
    return [k for megabatch in shuffled + ([leftover] if leftover else []) for k in megabatch]


class ModalityLengthSampler(torch.utils.data.Sampler):
    """``group_by_modality_length`` for the Trainer: reseeded every epoch from the recipe's seed (upstream drew from
    the global generator), so a resumed job draws the same order."""

    def __init__(self, lengths: list[int], batch_size: int, world: int, seed: int):
        self.lengths, self.batch_size, self.world, self.seed, self.epoch = lengths, batch_size, world, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_length_grouped_indices(self.lengths, self.batch_size, self.world, generator))


def _trainer_class(trainer):
    """Trainer whose loss always reaches the trained parameters: a batch of text-only instruction data never passes
    the projector, so its loss has no graph (LLaVA's code appends a zero-length slice of image features for the
    same reason); a zero-weighted sum of the trained parameters keeps backward (and DDP) working."""

    class KeepsGraph(trainer):
        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if not getattr(dataset, "group_by_modality_length", False):
                return super()._get_train_sampler(train_dataset)
            # as LLaVA's trainer: a megabatch spans the processes and the accumulation steps of one update
            world = self.args.world_size * self.args.gradient_accumulation_steps
            return ModalityLengthSampler(modality_lengths(dataset.examples), self.args.train_batch_size, world, self.args.seed)

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            loss = result[0] if return_outputs else result
            if not loss.requires_grad:
                loss = loss + 0.0 * sum(p.sum() for p in model.parameters() if p.requires_grad)
                result = (loss, *result[1:]) if return_outputs else loss
            return result

    return KeepsGraph


def prepare_model(model, trainable: str, lora: dict | None):
    """Freeze everything but the trained parts; returns (model, parameter groups by name pattern)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {sorted(TRAINABLE)}, got {trainable!r}")
    for param in model.parameters():
        param.requires_grad = False
    if trainable == "projector+lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"],
                bias="none",
                target_modules=LORA_TARGETS,
                modules_to_save=["multi_modal_projector"],
            ),
        )
    pattern = TRAINABLE[trainable]
    for name, param in model.named_parameters():
        if pattern.search(name):
            param.requires_grad = True
    return model


NO_WEIGHT_DECAY = re.compile(r"bias|ln|bn")


def parameter_groups(model, job: dict) -> list[dict]:
    """The trained parameters by learning rate (LLaVA recipes give the projector its own) and weight decay, with
    LAVIS's rule for which get none: fewer than 2 dimensions, or "bias", "ln" or "bn" in the name (BLIP-2's query
    tokens, 3-D, are decayed). Each group lists its parameters' ``names`` too."""
    projector = TRAINABLE["projector"]
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = job["projector_lr"] if projector.search(name) else job["lr"]
        decay = 0.0 if param.ndim < 2 or NO_WEIGHT_DECAY.search(name) else job["weight_decay"]
        groups.setdefault((lr, decay), []).append((name, param))
    return [
        {"params": [p for _, p in named], "names": [n for n, _ in named], "lr": lr, "weight_decay": decay}
        for (lr, decay), named in groups.items()
    ]


def lavis_warmup_cosine(step: int, steps_per_epoch: int, epochs: int, init_lr: float, min_lr: float,
                        warmup_steps: int, warmup_start_lr: float) -> float:  # fmt: skip
    """LAVIS's ``linear_warmup_cosine_lr`` at an optimiser step (0-based; LAVIS sets it before the step's update).
    In the first epoch a linear warm-up from ``warmup_start_lr`` over ``warmup_steps`` steps, then ``init_lr`` to the
    epoch's end (LAVIS assumes the warm-up fits in one epoch; when it does not, it is cut short). From the second
    epoch a cosine over epochs, stepped per epoch, not per step: constant within an epoch."""
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    if epoch == 0:
        return min(init_lr, warmup_start_lr + (init_lr - warmup_start_lr) * step_in_epoch / max(warmup_steps, 1))
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) + min_lr


def steps_per_epoch(n_examples: int, per_device_batch: int, world: int, accumulation: int) -> int:
    """Optimiser steps per epoch as the Trainer counts them (a distributed sampler's share, partial batches kept)."""
    return max(math.ceil(math.ceil(n_examples / world) / per_device_batch) // accumulation, 1)


def lr_scheduler(optimizer, job: dict, n_examples: int, world: int, accumulation: int):
    """The recipe's schedule as a LambdaLR, or None for the Trainer's own (``cosine`` with ``warmup_ratio``)."""
    if job["schedule"] == "cosine":
        return None
    per_epoch = steps_per_epoch(n_examples, job["per_device_batch"], world, accumulation)
    args = dict(steps_per_epoch=per_epoch, epochs=job["epochs"], init_lr=job["lr"], min_lr=job["min_lr"],
                warmup_steps=job["warmup_steps"], warmup_start_lr=job["warmup_start_lr"])  # fmt: skip
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lavis_warmup_cosine(step, **args) / job["lr"])


@contextlib.contextmanager
def deterministic_algorithms():
    """PyTorch's deterministic algorithms while training on the CPU: an op without a deterministic kernel raises
    instead of varying from run to run. The previous setting is restored (tests train in one process)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def trained_parameter_names(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


# where the job runs and writes, not what it trains: left out of the fine-tuned model's identity
RUN_LOCATION_KEYS = ("checkpoint_dir", "out_dir", "log_file", "workers", "device", "base_dir", "merge_base_dir")


def training_identity(job: dict) -> str:
    """sha256 of everything a fine-tuned model is made of: the recipe, the base model's revision (and the merge
    base's), and every training example by its text and its image's content hash (its path where none was
    recorded). It is the model's revision (``finetuned:sha256:<identity>``), so every cache key and result made with
    the model names it, and the key its checkpoints are resumed under."""
    recipe = {k: v for k, v in job.items() if k not in RUN_LOCATION_KEYS and k != "examples"}
    examples = [[e.get("sha256") or e["path"], e["segments"]] for e in job["examples"]]
    return cache_key(recipe, examples)


def _discard_checkpoints_of_other_settings(job: dict) -> None:
    """Checkpoints resume only the same training: a changed recipe (lr, epochs…), training data (an image replaced
    under the same name) or base model (its files rewritten, e.g. a demo model retrained by its rule) starts
    afresh."""
    base = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(job["base_dir"]).iterdir())
    fingerprint = cache_key(training_identity(job), base)
    folder, stamp = Path(job["checkpoint_dir"]), Path(job["checkpoint_dir"]) / "SETTINGS"
    if folder.is_dir() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


COMPLETE_MARKER = "COMPLETE"


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _checkpoints(folder: Path) -> list[Path]:
    """checkpoint-<step> folders, oldest step first."""
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest checkpoint saved whole, or None. Folders a killed or failed save left half-written (no marker) are
    deleted first, so that neither resume nor the Trainer ever reads them."""
    root = Path(folder)
    if not root.is_dir():
        return None
    complete = []
    for checkpoint in _checkpoints(root):
        if (checkpoint / COMPLETE_MARKER).is_file():
            complete.append(checkpoint)
        elif _is_rank_zero():
            print(f"discarding the incomplete checkpoint {checkpoint} (its save was interrupted)")
            shutil.rmtree(checkpoint)
    return str(complete[-1]) if complete else None


def _progress_callback():
    from transformers import TrainerCallback

    from .progress import Progress

    class LogProgress(TrainerCallback):
        """Optimiser steps done of the run's total, rate and time left in the job's log (the Trainer's own bar is
        off: in a log file it is one line redrawn with carriage returns)."""

        progress = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.progress = Progress(state.max_steps, "train", unit="steps")
                self.progress.done = state.global_step  # a resumed job starts where its checkpoint left off
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update()
            return control

    return LogProgress()


def _mark_complete_callback():
    from transformers import TrainerCallback

    class MarkCompleteCheckpoints(TrainerCallback):
        """After the Trainer has written a checkpoint (model, optimizer, scheduler, RNG and trainer state), mark it
        complete, then delete the older ones. The Trainer's own rotation (save_total_limit) deletes the previous
        checkpoint before the new one is known to be whole, so a kill at the wrong moment would leave nothing to
        resume from; here a complete checkpoint exists at every moment after the first save."""

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                newest = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                write_text(newest / COMPLETE_MARKER, f"step {state.global_step}\n")
                for older in _checkpoints(Path(args.output_dir)):
                    if older != newest:
                        shutil.rmtree(older)
            return control

    return MarkCompleteCheckpoints()


LLAVA_LANGUAGE_MODEL = "model.language_model."


def lora_deltas(model) -> dict[str, torch.Tensor]:
    """ΔW = scale · B·A of every LoRA layer, by the weight's name in the unwrapped model."""
    deltas = {}
    for name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
            deltas[name.removeprefix("base_model.model.") + ".weight"] = module.get_delta_weight("default").detach()
    return deltas


def merge_onto_language_model(model, deltas: dict[str, torch.Tensor], llm_dir) -> None:
    """Upstream's LoRA merge (its merge_lora_weights.py --model-base lmsys/vicuna-7b-v1.5): the language model's
    weights become the plain LLM's plus ΔLoRA, not the LLaVA language model's the adapters were trained on (the
    vision tower and the trained projector stay). Rows of the embedding and output layers beyond the LLM's
    vocabulary (the tokens llava-hf added) keep the LLaVA model's."""
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32).state_dict()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(LLAVA_LANGUAGE_MODEL):
                source = "model." + name.removeprefix(LLAVA_LANGUAGE_MODEL)
            elif name == "lm_head.weight":
                source = name
            else:
                continue
            if source not in llm:
                raise KeyError(f"{llm_dir}: no {source} for the language-model weight {name}")
            base = llm[source].to(param.dtype) + deltas.get(name, 0)
            if base.shape == param.shape:
                param.copy_(base)
            elif base.shape[1:] == param.shape[1:] and base.shape[0] < param.shape[0]:
                param[: base.shape[0]] = base  # the added tokens' rows stay
            else:
                raise ValueError(f"{llm_dir}: {source} is {tuple(base.shape)}, the model's {name} {tuple(param.shape)}")


def _epoch_evaluation_callback(job: dict, processor, processor_model_config):
    """After every epoch, the model generates for ``job['epoch_eval']``'s queries through the same loop and scoring
    rule as every evaluation (:func:`vlmrepro.evaluate.run_generation`, :func:`vlmrepro.scoring.score_outputs`);
    the best epoch's weights are kept (LAVIS's validation after each epoch, the paper's best epoch). Results are
    appended to ``epochs.jsonl`` beside the checkpoints, so a resumed job knows the best so far."""
    from transformers import TrainerCallback

    from .evaluate import run_generation
    from .io import read_jsonl
    from .memory import resolve_batch_size
    from .models import VisionLanguageModel
    from .prompts import render
    from .scoring import score_outputs

    spec, run = job["epoch_eval"], job["epoch_eval"]["run"]
    folder = Path(job["checkpoint_dir"])
    files, best_dir, log = folder / "eval-files", folder / "best-epoch", folder / "epochs.jsonl"
    queries = read_jsonl(spec["queries"])

    class EvaluateEachEpoch(TrainerCallback):
        vlm = None  # the training model behind the evaluation interface, built at the first evaluation

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            if not state.is_world_process_zero:
                return control
            epoch = round(state.epoch)
            done = epoch_results(folder)
            if any(e["epoch"] == epoch for e in done["epochs"]):
                return control
            if self.vlm is None:
                processor.save_pretrained(files)
                processor_model_config.save_pretrained(files)
                self.vlm = VisionLanguageModel.around(model, files, run)
                prompts = [render(run["template"], q["question"]) for q in queries]
                self.batch_size = resolve_batch_size(self.vlm, run, prompts)
            model.eval()
            autocast = torch.autocast("cuda", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
            with autocast:
                records = run_generation(self.vlm, queries, run["template"], run["answer_marker"], run["max_new_tokens"],
                                         self.batch_size, "epoch", log=lambda _: None, answer_from=run["answer_from"],
                                         min_new_tokens=run.get("min_new_tokens", 0))  # fmt: skip
            model.train()
            score = score_outputs(records, rule=spec["rule"])
            entry = {"epoch": epoch, "step": state.global_step, "accuracy": score["accuracy"],
                     "n_evaluated": score["n_evaluated"]}  # fmt: skip
            shown = "N/A" if score["accuracy"] is None else f"{score['accuracy']:.2f}"
            print(f"epoch {epoch}: accuracy {shown} on {score['n_evaluated']} items")
            best = done.get("accuracy_best_epoch")
            if score["accuracy"] is not None and (best is None or score["accuracy"] > best):
                with atomic_dir(best_dir) as work:  # the first best epoch wins ties, as an argmax
                    model.save_pretrained(work)
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
            return control

    return EvaluateEachEpoch()


def epoch_results(checkpoint_dir) -> dict:
    """Every epoch's accuracy, the best epoch and the last (read from epochs.jsonl)."""
    from .io import read_jsonl

    log = Path(checkpoint_dir) / "epochs.jsonl"
    epochs = read_jsonl(log) if log.is_file() else []
    scored = [e for e in epochs if e["accuracy"] is not None]
    if not scored:
        return {"epochs": epochs}
    best = max(scored, key=lambda e: e["accuracy"])
    return {"epochs": epochs, "best_epoch": best["epoch"], "accuracy_best_epoch": best["accuracy"],
            "accuracy_last_epoch": epochs[-1]["accuracy"]}  # fmt: skip


def effective_recipe(job: dict, device: str, args, groups: list[dict], pad_fill, world: int, accumulation: int) -> dict:
    """Every value that reached the trainer (written as recipe.json beside the fine-tuned weights), to compare with
    the upstream recipes of docs/protocol.md#training-hyperparameters."""
    return {
        "job": {k: v for k, v in job.items() if k not in ("examples", "checkpoint_dir", "out_dir", "log_file")},
        "n_examples": len(job["examples"]),
        "world_size": world,
        "gradient_accumulation_steps": accumulation,
        "steps_per_epoch": steps_per_epoch(len(job["examples"]), job["per_device_batch"], world, accumulation),
        "schedule": job["schedule"],
        "image_padding_colour": pad_fill,
        "device": device,
        "tf32": bool(job["tf32"]) and device.startswith("cuda"),
        "parameter_groups": [
            {"lr": g["lr"], "weight_decay": g["weight_decay"], "n_parameters": sum(p.numel() for p in g["params"]),
             "names": g["names"]}  # fmt: skip
            for g in groups
        ],
        "training_arguments": {k: v for k, v in args.to_dict().items() if not k.startswith(("push_to_hub", "hub_"))},
    }


def run(job: dict) -> dict:
    """Train, save the merged model into ``job['out_dir']`` and return the loss log."""
    from transformers import AutoProcessor, Trainer, TrainingArguments, set_seed

    from .models import model_class, pick_device, pick_dtype, processor_options

    device = pick_device(job["device"])
    processor = AutoProcessor.from_pretrained(job["base_dir"], **processor_options(job.get("image_backend")))
    processor.tokenizer.padding_side = "right"
    model_inputs = {}
    if job["image_size"]:  # LAVIS trains and evaluates BLIP-2 at 364 px: the saved processor keeps the size
        if job["family"] not in ("blip2", "instructblip"):
            raise ValueError(f"image_size is a BLIP-2 recipe setting (LAVIS); family {job['family']!r} has its own")
        processor.image_processor.size = {"height": job["image_size"], "width": job["image_size"]}
        model_inputs["interpolate_pos_encoding"] = True  # the vision tower's position grid, resized bicubically
    dtype = pick_dtype(job["dtype"], device)
    _discard_checkpoints_of_other_settings(job)
    last = last_complete_checkpoint(job["checkpoint_dir"])
    # Resuming: full-weight checkpoints are reloaded through from_pretrained, which maps the saved parameter names
    # back (Trainer's own reload does not, in transformers 5); LoRA checkpoints hold the adapter and the projector.
    start = last if last and job["trainable"] != "projector+lora" else job["base_dir"]
    model = model_class(job["family"]).from_pretrained(start, dtype=dtype)
    set_seed(job["seed"])  # LoRA's adapters are initialised here, before the Trainer seeds anything
    model = prepare_model(model, job["trainable"], job.get("lora"))
    for param in model.parameters():  # fp32 master weights: bf16 would round most 2e-5 updates away
        if param.requires_grad:
            param.data = param.data.float()
    if job.get("gradient_checkpointing"):
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need grads to flow
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation, rest = divmod(job["global_batch"], job["per_device_batch"] * world)
    if accumulation < 1 or rest:
        raise ValueError(
            f"global_batch {job['global_batch']} is not a multiple of per_device_batch {job['per_device_batch']} x "
            f"{world} GPU(s): set the recipe's global_batch / per_device_batch / gpus so that it is"
        )
    if device.startswith("cuda"):  # upstream's --tf32 True (LAVIS left PyTorch's default, off)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(job["tf32"])
    args = TrainingArguments(
        output_dir=job["checkpoint_dir"],
        per_device_train_batch_size=job["per_device_batch"],
        gradient_accumulation_steps=accumulation,
        num_train_epochs=job["epochs"],
        learning_rate=job["lr"],
        weight_decay=0.0,
        warmup_steps=job["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        lr_scheduler_type="cosine",
        logging_steps=1,
        logging_nan_inf_filter=False,  # a diverged loss must show up as NaN in the curve
        gradient_checkpointing=bool(job.get("gradient_checkpointing")),
        # a one-epoch run over the ImageNet + LLaVA mix takes days: checkpoint every save_steps optimiser steps
        save_strategy="steps" if job.get("save_steps") else "epoch",
        **({"save_steps": job["save_steps"]} if job.get("save_steps") else {}),
        save_total_limit=None,  # MarkCompleteCheckpoints keeps the newest complete checkpoint only
        bf16=device.startswith("cuda") and job["dtype"] == "bfloat16",
        seed=job["seed"],
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=job.get("workers", 0),
        use_cpu=not device.startswith("cuda"),
        disable_tqdm=True,
        # the other processes wait at their next collective while rank 0 evaluates an epoch (ImageNet: ~30 min)
        ddp_timeout=4 * 3600 if job.get("epoch_eval") else 1800,
    )
    groups = parameter_groups(model, job)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], weight_decay=0.0)
    scheduler = lr_scheduler(optimizer, job, len(job["examples"]), world, accumulation)
    pad_fill = processor_mean_colour(processor.image_processor) if job["image_aspect_ratio"] == "pad" else None
    trainer = _trainer_class(Trainer)(
        model=model,
        args=args,
        train_dataset=Conversations(job["examples"], image_transform(job, pad_fill), job["group_by_modality_length"]),
        data_collator=make_collator(processor, job.get("answer_prefix", ""), model_inputs, stop_token(model.config)),
        optimizers=(optimizer, scheduler),
        callbacks=[_mark_complete_callback(), _progress_callback()]
        + ([_epoch_evaluation_callback(job, processor, model.config)] if job.get("epoch_eval") else []),
    )
    recipe = effective_recipe(job, device, args, groups, pad_fill, world, accumulation)
    if _is_rank_zero():  # beside the checkpoints while training, and beside the weights after it
        write_text(Path(job["checkpoint_dir"]) / "recipe.json", json.dumps(recipe, indent=1, default=str) + "\n")
    # on a GPU, deterministic kernels would slow the paper's fine-tunes; there bf16 already rounds differently
    with deterministic_algorithms() if device == "cpu" else contextlib.nullcontext():
        with naming_full_disk(job["checkpoint_dir"]):  # checkpoints are written inside train()
            trainer.train(resume_from_checkpoint=last)
    losses = [
        {"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"]}
        for e in trainer.state.log_history
        if "loss" in e
    ]
    evaluated = epoch_results(job["checkpoint_dir"]) if job.get("epoch_eval") else {}
    if trainer.is_world_process_zero() and "best_epoch" in evaluated:
        # the best epoch's weights are the fine-tuned model (LAVIS reported its best validation epoch)
        model = model_class(job["family"]).from_pretrained(Path(job["checkpoint_dir"]) / "best-epoch", dtype=dtype)
    if trainer.is_world_process_zero():
        if job["trainable"] == "projector+lora":
            deltas = lora_deltas(model)
            model = model.merge_and_unload()
            if job.get("merge_base_dir"):
                merge_onto_language_model(model, deltas, job["merge_base_dir"])
        with atomic_dir(job["out_dir"]) as work:
            model.save_pretrained(work)
            processor.tokenizer.padding_side = "left"
            processor.save_pretrained(work)
            (work / "REVISION").write_text(f"finetuned:sha256:{training_identity(job)}\n")
            (work / "recipe.json").write_text(json.dumps(recipe, indent=1, default=str) + "\n")
    return {
        "losses": losses,
        "diverged": not all(math.isfinite(l["loss"]) for l in losses),
        "trained": job["trainable"],
        **evaluated,
    }


def training_examples(params: dict, inputs: Mapping[str, str]) -> list[dict]:
    """The examples (``{"path", "segments"}``) of whichever training data the rule gave the fine-tune: an
    instruction mix built by its own rule, captions of the training images written by a captioning model, or the
    planned classification items answered with their label (or BLIP-2's caption of it)."""
    if "mix" in inputs:
        return read_jsonl(inputs["mix"])
    if "captions" in inputs:  # one caption per training image
        rows = read_jsonl(inputs["captions"])
        images = {q["item"]: image_of(q) for q in read_jsonl(inputs["queries"])}
        examples = [
            {**images[r["item"]], "segments": [[params["prompt"], r["pred"]]]} for r in rows if r["status"] == "ok"
        ]
        print(f"{len(examples)} captions ({len(rows) - len(examples)} training images without one)")
        return examples
    answer = blip_caption_label if params["answer"] == "blip_caption" else (lambda label: label)
    return [
        {**image_of(q), "segments": [[params["prompt"], answer(q["label"])]]} for q in read_jsonl(inputs["queries"])
    ]



def finetune_job(params: dict, inputs: Mapping[str, str], *, family: str, device: str, checkpoint_dir: str,
                 out_dir: str, log_file: str, workers: int) -> dict:
    """Every argument of :func:`run` for the fine-tune rule's job: the recipe's settings (``params``), the training
    examples and base model of ``inputs`` (``rules/common.smk: finetune_inputs``), and where checkpoints, the
    model and the loss log go."""
    examples = training_examples(params, inputs)
    if params["epoch_eval"]:  # the evaluation after every epoch reads its planned queries
        params = {**params, "epoch_eval": {**params["epoch_eval"], "queries": inputs["eval_queries"]}}
    return {
        **params,
        "family": family,
        "device": device,
        "base_dir": inputs["base"],
        "base_revision": read_revision(inputs["base"]),
        # the plain language model LoRA adapters are merged onto (upstream: lmsys/vicuna-7b-v1.5), if any
        "merge_base_dir": inputs.get("merge_base"),
        **({"merge_base_revision": read_revision(inputs["merge_base"])} if "merge_base" in inputs else {}),
        "examples": examples,
        "checkpoint_dir": checkpoint_dir,
        "out_dir": out_dir,
        "log_file": log_file,
        "workers": workers,
    }


def launch(job: dict, gpus: int, import_root: str) -> None:
    """Train ``job`` and write its loss log (``job['log_file']``): in this process on the CPU or one GPU; data
    parallel over ``gpus`` > 1 GPUs as ``torchrun`` processes that import this package from ``import_root`` and
    read the job from ``job.json`` beside the checkpoints (which make a rerun resume)."""
    if gpus <= 1:
        write_json(job["log_file"], run(job))
        return
    job_file = Path(job["checkpoint_dir"]) / "job.json"
    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(json.dumps(job))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([import_root, os.environ.get("PYTHONPATH", "")])}
    command = [*torchrun, "-m", "vlmrepro.finetune", str(job_file)]
    # torchrun holds the job's GPU locks too: a killed job leaves its cards taken until training has stopped
    run_holding_gpus(command, check=True, env=env, stdout=sys.stdout, stderr=sys.stderr)


if __name__ == "__main__":
    job = json.loads(Path(sys.argv[1]).read_text())
    log = run(job)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(job["log_file"]).write_text(json.dumps(log, indent=1))
