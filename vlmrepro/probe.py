"""Linear probes and linear heads on stored features (docs/protocol.md#probe-and-linear-head-accuracy,
docs/protocol.md#clip-linear-heads, docs/protocol.md#vlm-feature-probes).

Upstream reports the best epoch on the evaluation split (an optimistic selection, kept as the paper's number);
as an extra column, a second probe is trained on the training split minus a held-out tail, the epoch is chosen
on that tail, and that epoch's evaluation accuracy is reported.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .intervals import attach
from .progress import Progress


def _train(
    train_x,
    train_y,
    eval_x,
    eval_y,
    n_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    reshuffle: bool,
    fp16_init: bool,
    select_x=None,
    select_y=None,
    log=print,
):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    head = torch.nn.Linear(train_x.shape[1], n_classes)
    if fp16_init:  # upstream creates the CLIP head in fp16 and casts it back: fp16-rounded initial weights
        head = head.half().float()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = list(range(len(train_x)))
    curve, best_predictions = [], None
    progress = Progress(epochs, "train probe", log, unit="epochs")
    for _ in range(epochs):
        if reshuffle:
            rng.shuffle(order)
        index = torch.tensor(order)
        losses = []
        for start in range(0, len(order), batch_size):
            batch = index[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(head(train_x[batch]), train_y[batch])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            predictions = head(eval_x).argmax(1)
            point = {"loss": float(np.mean(losses)), "eval": float((predictions == eval_y).float().mean())}
            if not curve or point["eval"] > max(p["eval"] for p in curve):
                best_predictions = predictions
            if select_x is not None:
                point["select"] = float((head(select_x).argmax(1) == select_y).float().mean())
        curve.append(point)
        progress.update()
    return curve, best_predictions


def run_probe(
    data: dict[str, np.ndarray],
    n_classes: int,
    eval_split: str,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 512,
    seed: int = 0,
    reshuffle: bool = False,
    normalize: bool = False,
    labels: str = "class_index",
    fp16_init: bool = False,
    heldout_fraction: float = 0.1,
) -> dict:
    """Train on rows of split 'train' (in stored order), evaluate on ``eval_split`` after every epoch."""
    x = torch.from_numpy(data["features"])
    if normalize:
        x = torch.nn.functional.normalize(x, dim=-1)
    label_key = "label_idx" if labels == "label_idx" and (data["label_idx"] >= 0).all() else "class_index"
    y = torch.from_numpy(data[label_key].astype(np.int64))
    train, evaluate = data["split"] == "train", data["split"] == eval_split
    if not train.any() or not evaluate.any():
        raise ValueError(f"features need rows of split 'train' and {eval_split!r} (found {sorted(set(data['split']))})")
    usable = ~torch.isnan(x).any(dim=1).numpy()
    if not usable.all():
        return {"accuracy": None, "na_reason": f"N/A: position missing in {int((~usable).sum())} sequences (too short)"}
    train_x, train_y, eval_x, eval_y = x[train], y[train], x[evaluate], y[evaluate]
    overflowed = data.get("context_overflow_split", np.array([], dtype=str))  # left out by features.load
    n_eval_overflow, n_train_overflow = int((overflowed == eval_split).sum()), int((overflowed == "train").sum())
    common = dict(
        n_classes=n_classes,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        reshuffle=reshuffle,
        fp16_init=fp16_init,
    )
    curve, predictions = _train(train_x, train_y, eval_x, eval_y, **common)
    best = int(np.argmax([p["eval"] for p in curve]))
    result = {
        "accuracy": 100 * curve[best]["eval"],
        "best_epoch": best + 1,
        "n_train": int(train.sum()),
        "n_evaluated": int(evaluate.sum()),
        "n_items": int(evaluate.sum()) + n_eval_overflow,
        "not_evaluated": {"context_overflow": n_eval_overflow} if n_eval_overflow else {},
        "n_train_context_overflow": n_train_overflow,
        "labels": label_key,
        "curve": curve,
        # per-item (target, prediction) at the best epoch: per-class accuracies for Figure 7 / Table 11
        "predictions": [[int(t), int(p)] for t, p in zip(eval_y, predictions)],
    }
    rows = data["row"][evaluate] if "row" in data else np.flatnonzero(evaluate)
    attach(result, rows, {"accuracy": [int(t) == int(p) for t, p in zip(eval_y, predictions)]})
    n_heldout = int(round(heldout_fraction * len(train_x)))
    if n_heldout > 0:
        fit = slice(0, len(train_x) - n_heldout)
        held = slice(len(train_x) - n_heldout, len(train_x))
        selection, _ = _train(
            train_x[fit], train_y[fit], eval_x, eval_y, select_x=train_x[held], select_y=train_y[held], **common
        )
        chosen = int(np.argmax([p["select"] for p in selection]))
        result.update(accuracy_heldout_epoch=100 * selection[chosen]["eval"], heldout_epoch=chosen + 1)
    if any(np.isnan(p["loss"]) for p in curve):
        result["note"] = "loss diverged (NaN)"
    return result
