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

Run as ``python -m vlmrepro.finetune job.json`` (or under ``torchrun``): the job file holds every argument.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import torch

from .io import atomic_dir, naming_full_disk, write_text

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


class Conversations(torch.utils.data.Dataset):
    """Examples ``{"path": image or None, "segments": [[prompt, answer], ...]}``; images are opened lazily in
    data-loader workers."""

    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        from .evaluate import load_rgb

        example = self.examples[i]
        if example["path"] is None:  # text-only instruction data
            return {"image": None, "segments": example["segments"]}
        return {"image": load_rgb(example["path"]), "segments": example["segments"]}


def make_collator(processor, answer_prefix: str = ""):
    """Per segment: prompt ids (the first through the processor, which expands image placeholders) + answer ids +
    EOS; labels mask the prompts. Answers are tokenised on their own and concatenated, so no merge happens across a
    boundary. Examples without an image add no pixels (the model places image features by placeholder count)."""
    tok = processor.tokenizer

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
                answer_ids = tok(answer_prefix + answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
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
        return out

    return collate


def _trainer_class(trainer):
    """Trainer whose loss always reaches the trained parameters: a batch of text-only instruction data never passes
    the projector, so its loss has no graph (LLaVA's code appends a zero-length slice of image features for the
    same reason); a zero-weighted sum of the trained parameters keeps backward (and DDP) working."""

    class KeepsGraph(trainer):
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


def _discard_checkpoints_of_other_settings(job: dict) -> None:
    """Checkpoints resume only the same training: a changed recipe (lr, epochs, data…) or a changed base model (its
    files rewritten, e.g. a demo model retrained by its rule) starts afresh."""
    keys = sorted(k for k in job if k not in ("checkpoint_dir", "out_dir", "log_file", "workers", "device"))
    base = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(job["base_dir"]).iterdir())
    fingerprint = hashlib.sha256(
        json.dumps({"job": {k: job[k] for k in keys}, "base": base}, sort_keys=True, default=str).encode()
    ).hexdigest()
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


def run(job: dict) -> dict:
    """Train, save the merged model into ``job['out_dir']`` and return the loss log."""
    from transformers import AutoProcessor, Trainer, TrainingArguments, set_seed

    from .models import model_class, pick_device, pick_dtype

    device = pick_device(job["device"])
    processor = AutoProcessor.from_pretrained(job["base_dir"])
    processor.tokenizer.padding_side = "right"
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
    )
    projector = TRAINABLE["projector"]
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if p.requires_grad and projector.search(n)],
            "lr": job["projector_lr"],
        },
        {
            "params": [p for n, p in model.named_parameters() if p.requires_grad and not projector.search(n)],
            "lr": job["lr"],
        },
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    trainer = _trainer_class(Trainer)(
        model=model,
        args=args,
        train_dataset=Conversations(job["examples"]),
        data_collator=make_collator(processor, job.get("answer_prefix", "")),
        optimizers=(optimizer, None),
        callbacks=[_mark_complete_callback()],
    )
    # on a GPU, deterministic kernels would slow the paper's fine-tunes; there bf16 already rounds differently
    with deterministic_algorithms() if device == "cpu" else contextlib.nullcontext():
        with naming_full_disk(job["checkpoint_dir"]):  # checkpoints are written inside train()
            trainer.train(resume_from_checkpoint=last)
    losses = [
        {"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"]}
        for e in trainer.state.log_history
        if "loss" in e
    ]
    if trainer.is_world_process_zero():
        if job["trainable"] == "projector+lora":
            model = model.merge_and_unload()
        with atomic_dir(job["out_dir"]) as work:
            model.save_pretrained(work)
            processor.tokenizer.padding_side = "left"
            processor.save_pretrained(work)
            (work / "REVISION").write_text(f"finetuned:{job['base_revision']}\n")
    return {
        "losses": losses,
        "diverged": not all(math.isfinite(l["loss"]) for l in losses),
        "trained": job["trainable"],
    }


if __name__ == "__main__":
    job = json.loads(Path(sys.argv[1]).read_text())
    log = run(job)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(job["log_file"]).write_text(json.dumps(log, indent=1))
