"""ImageWikiQA (paper §4, docs/protocol.md#table-5-imagewikiqa): multiple-choice questions about an ImageNet object
that can only be answered by recognising it.

* ``resolve_by_file_name``: the released file names images ``images/ILSVRC2012_val_X.JPEG``; they are found by file
  name in the user's ImageNet validation images (no Google Drive step). Missing ones are kept, marked, and counted.
* ``with_class_name``: the "w/ GT Class" variant (the class name substituted into the question line, as in
  docs/protocol.md#imagewikiqa-file-and-construction).
* ``parse_choice``: the MMMU-style parser of the upstream notebooks (docs/protocol.md#multiple-choice-parser), random
  fallback included.
* ``baselines``: random guessing and the most frequent gold letter, from the file itself.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

from .datasets import ManifestError, checked_rows
from .intervals import attach, row_ids
from .scoring import not_evaluated

LETTERS = ["A", "B", "C", "D"]
FIELDS = ("image", "text", "label", "classname")


def read_questions(path) -> list[dict]:
    """The released JSON Lines file, every row checked (fields, the four lettered choices, a letter label)."""
    rows = []
    for line_no, row in checked_rows(path, FIELDS):
        if row["label"] not in LETTERS:
            raise ManifestError(f"{path}: row {line_no} has label {row['label']!r}, expected one of A-D")
        if len(answer_texts(row["text"])) != len(LETTERS):
            raise ManifestError(f"{path}: row {line_no}: text does not list the choices 'A. ' to 'D. '")
        rows.append(row)
    if not rows:
        raise ManifestError(f"{path}: no questions")
    return rows


def resolve_by_file_name(rows: list[dict], image_dir, prefix: str) -> tuple[list[dict], dict]:
    """Manifest rows (split "test", file order) whose images are the files of the same name under ``image_dir``.

    A name found nowhere keeps a path that does not exist, so the split check marks the row missing and counts it.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise ManifestError(f"image directory {image_dir} does not exist (ImageWikiQA images are looked up there)")
    found: dict[str, str] = {}
    for folder, _, files in os.walk(image_dir):
        for name in files:
            found.setdefault(name, os.path.relpath(os.path.join(folder, name), image_dir))
    out, missing = [], []
    for row in rows:
        name = os.path.basename(row["image"])
        if name not in found:
            missing.append(name)
        out.append({**row, "image": prefix + found.get(name, f"not-found/{name}"), "split": "test"})
    return out, {"n_rows": len(rows), "n_missing_images": len(missing), "missing": missing[:50]}


def answer_texts(text: str) -> dict[str, str]:
    """Choice letter -> text, from the lines 'A. …' to 'D. …' (upstream: lines 2-5 of text, first 3 chars cut)."""
    lines = text.split("\n")
    for start, line in enumerate(lines):
        if line.startswith("A. ") and len(lines) >= start + 4:
            block = lines[start : start + 4]
            if all(l.startswith(f"{x}. ") for l, x in zip(block, LETTERS)):
                return {x: l[3:] for x, l in zip(LETTERS, block)}
    return {}


def with_class_name(text: str, classname: str) -> str:
    """The question line with the object named (the construction's rule: the first phrase that occurs, every
    occurrence)."""
    question, sep, rest = text.partition("\n")
    for phrase, name in (
        ("this object", classname),
        ("This object", classname.capitalize()),
        ("these objects", classname + "s"),
    ):
        if phrase in question:
            return question.replace(phrase, name) + sep + rest
    return text


def parse_choice(response: str, index2ans: dict[str, str], rng: random.Random) -> tuple[str, bool]:
    """MMMU-style multiple-choice parsing (docs/protocol.md#multiple-choice-parser). Returns (letter, whether it was a
    random fallback)."""
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "
    candidates, how = [], None
    for letter in LETTERS:
        if f"({letter})" in response:
            candidates.append(letter)
            how = "bracket"
    if not candidates:
        for letter in LETTERS:
            if f" {letter} " in response:
                candidates.append(letter)
                how = "space"
    if not candidates and len(response.split()) > 5:
        for letter in LETTERS:
            if index2ans.get(letter) and index2ans[letter].lower() in response.lower():
                candidates.append(letter)
                how = "content"
    if not candidates:
        return rng.choice(LETTERS), True
    if len(candidates) == 1:
        return candidates[0], False
    if how == "bracket":
        positions = [response.rfind(f"({c})") for c in candidates]
    elif how == "space":
        positions = [response.rfind(f" {c} ") for c in candidates]
    else:
        positions = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    return candidates[positions.index(max(positions))], False


def score_mcq(rows: list[dict], seed: int = 1234) -> dict:
    """Accuracy over the evaluated rows' ``pred``; one Random(seed) per file (deterministic per model;
    docs/protocol.md#multiple-choice-parser). A fine-tuned model's ``pred`` is its generation alone, without the
    chain-of-thought prefix of its prompt, as model_vqa returned it."""
    rng = random.Random(seed)
    evaluated = [r for r in rows if r.get("status") == "ok"]
    result = {"n_items": len(rows), "n_evaluated": len(evaluated), "not_evaluated": not_evaluated(rows)}
    if not evaluated:
        result.update(accuracy=None, na_reason=f"N/A: no item evaluated ({result['not_evaluated']})")
        return result
    correct, fallbacks = [], 0
    for row in evaluated:
        letter, fallback = parse_choice(row["pred"], answer_texts(row["prompt"]), rng)
        correct.append(letter == row["label"])
        fallbacks += fallback
    result.update(
        accuracy=100 * sum(correct) / len(evaluated),
        n_random_fallback=fallbacks,
        random_fallback_rate=100 * fallbacks / len(evaluated),
    )
    return attach(result, row_ids(evaluated), {"accuracy": correct})


def baselines(rows: list[dict]) -> dict[str, dict]:
    """Random guessing (expected accuracy) and always answering the most frequent gold letter, over all rows and
    over the unique question lines (the paper's 25.9 matches neither exactly: both are reported)."""
    counts = Counter(r["label"] for r in rows)
    unique = {r["text"]: r["label"] for r in rows}
    unique_counts = Counter(unique.values())
    letter, top = counts.most_common(1)[0]
    return {
        "random": {"accuracy": 100 / len(LETTERS), "n_items": len(rows), "n_evaluated": len(rows)},
        "max_frequency": {
            "accuracy": 100 * top / len(rows),
            "letter": letter,
            "accuracy_unique_questions": 100 * unique_counts.most_common(1)[0][1] / len(unique),
            "n_unique_questions": len(unique),
            "label_counts": dict(sorted(counts.items())),
            "n_items": len(rows),
            "n_evaluated": len(rows),
        },
    }
