"""Query planning: item order, candidate lists and question text, before any model runs
(docs/protocol.md#item-order-and-random-stream, docs/protocol.md#question-strings).

One sequential pass of a dedicated ``random.Random(seed)`` reproduces the upstream stream: shuffle the split's
rows, then for each row (in shuffled order) sample ``n - 1`` distractors from the sorted pool of the other unique
names, prepend the label and shuffle. The plan is model-independent, so every model, batch size, shard or resume
sees the same items in the same order with the same candidates.
"""

from __future__ import annotations

import random

from .prompts import render


def closed_world_question(init_prompt: str, choices: list[str]) -> str:
    return f'{init_prompt} Choose one from "{", ".join(choices)}".'


QUESTION_SOURCES = ("setting", "text", "text_with_class")


def _question(row: dict, question: str, choices, source: str) -> str:
    if source == "text":
        return row["text"]
    if source == "text_with_class":
        from .imagewikiqa import with_class_name

        return with_class_name(row["text"], row["classname"])
    question = render(question, label=row["label"])  # caption-data prompts name the image's class
    return question if choices is None else closed_world_question(question, choices)


def resolve_n_labels(candidates, classes: list[str]) -> int | None:
    """``none`` → open world; ``all`` → every unique name; an int K → K candidates."""
    if candidates in (None, "none"):
        return None
    n_unique = len(set(classes))
    if candidates == "all":
        return n_unique
    k = int(candidates)
    if not 2 <= k <= n_unique:
        raise ValueError(f"candidates={k} must be between 2 and the {n_unique} unique class names")
    return k


def plan_queries(
    rows: list[dict],
    classes: list[str],
    question: str,
    seed: int,
    candidates="none",
    order: str = "random",
    limit: int | None = None,
    shuffle: bool = True,
    question_from: str = "setting",
) -> list[dict]:
    """Return one query per evaluated row, in evaluation order.

    ``question_from``: "setting" asks ``question`` of every row; "text" asks the row's own question (ImageWikiQA);
    "text_with_class" asks it with the object named (ImageWikiQA "w/ GT Class")."""
    if question_from not in QUESTION_SOURCES:
        raise ValueError(f"question_from must be one of {QUESTION_SOURCES}, got {question_from!r}")
    rng = random.Random(seed)
    rows = list(rows)
    if shuffle:
        rng.shuffle(rows)
    if limit is not None:
        rows = rows[:limit]
    n_labels = resolve_n_labels(candidates, classes)
    if order not in ("random", "fixed"):
        raise ValueError(f"order must be 'random' or 'fixed', got {order!r}")
    unique_sorted = sorted(set(classes))
    queries = []
    for item, row in enumerate(rows):
        choices = None
        if n_labels is not None:
            if order == "fixed":
                # upstream passes the whole class list (duplicates included), identical for every image
                choices = list(classes)
            else:
                pool = [c for c in unique_sorted if c != row["label"]]
                choices = [row["label"]] + rng.sample(pool, n_labels - 1)
                rng.shuffle(choices)
        query = {
            "item": item,
            "row": row["row"],
            "image": row["image"],
            "path": row["path"],
            "label": row["label"],
            "split": row["split"],
            "choices": choices,
            "question": _question(row, question, choices, question_from),
        }
        for optional in ("label_idx", "sha256", "skip"):
            if optional in row:
                query[optional] = row[optional]
        queries.append(query)
    return queries
