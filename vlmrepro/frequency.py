"""Class-name frequency in the LLaVA-1.5 training corpora and its correlation with per-class accuracy
(docs/protocol.md#class-frequency): Figure 3, Table 11, Figure 7 and the per-stage correlations of App. B.6.

Sentences are split with NLTK's Punkt algorithm using fixed parameters (common English abbreviations) and
tokenised with NLTK's Treebank-style word tokenizer: both run offline, with no downloaded tokenizer data, so the
counts never depend on what happens to be installed. Counting follows the upstream notebook exactly
(docs/protocol.md#frequency-counting).
"""

from __future__ import annotations

import functools
import gzip
import json
from collections import Counter
from typing import Iterable, Iterator

BIN_EDGES = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 1000, 10000, 100000]
ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "st",
    "jr",
    "sr",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "inc",
    "ltd",
    "co",
    "no",
    "fig",
    "approx",
    "u.s",
    "mt",
    "ft",
    "ave",
}


@functools.cache
def _splitter():
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


def word_tokens(text: str) -> list[str]:
    """NLTK's word_tokenize (sentence split, then Treebank-style tokens) with the offline splitter."""
    from nltk.tokenize import word_tokenize

    return [token for sentence in _splitter().tokenize(text) for token in word_tokenize(sentence, preserve_line=True)]


def corpus_sentences(records: Iterable[dict], unit: str = "sentence", lowercase: bool = True) -> Iterator[list[str]]:
    """Token lists of every sentence (or turn) of every conversation turn, human and gpt, '<image>' removed."""
    if unit not in ("sentence", "turn"):
        raise ValueError(f"sentence unit must be 'sentence' or 'turn', got {unit!r}")
    split = _splitter().tokenize if unit == "sentence" else (lambda text: [text])
    for record in records:
        for turn in record.get("conversations", []):
            text = turn.get("value", "").replace("<image>", "")
            for sentence in split(text):
                yield word_tokens(sentence.lower() if lowercase else sentence)


def write_token_file(path, sentences: Iterable[list[str]]) -> int:
    n = 0
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for tokens in sentences:
            handle.write(json.dumps(tokens) + "\n")
            n += 1
    return n


def read_token_file(path) -> Iterator[list[str]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def count_classes(sentences: Iterable[list[str]], classes: list[str]) -> list[tuple[str, int]]:
    """Upstream rule: a sentence counts for a class entry when '##'+'##'.join(class tokens)+'##' occurs in
    '##'.join(sentence tokens) — so the name needs a token on each side; every class-list entry counts (ImageNet's
    duplicated names twice). Returns (key, count) for count >= 1, by count descending."""
    entries = [(" ".join(t), "##" + "##".join(t) + "##", set(t)) for t in (word_tokens(c.lower()) for c in classes)]
    counts: Counter = Counter()
    for tokens in sentences:
        joined, present = "##".join(tokens), set(tokens)
        hashes = any("#" in t for t in tokens)  # then token sets no longer bound the string match
        for key, needle, needed in entries:
            if (hashes or needed <= present) and needle in joined:
                counts[key] += 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def combine(pretrain: dict[str, int], instruct: dict[str, int]) -> dict[str, int]:
    """Upstream: only keys present in the pre-training counts, plus their instruction counts."""
    return {key: count + instruct.get(key, 0) for key, count in pretrain.items()}


def per_class_accuracy(rows: list[dict], cut_at_hyphen: bool = False) -> dict[str, float]:
    """Substring-rule accuracy (0-1) per label string over the evaluated rows (docs/protocol.md#correlation-and-bins).
    ``cut_at_hyphen`` reproduces upstream's label parsing (it read fine-tuned labels as question_id.split("-")[1]:
    'black-eyed susan' -> 'black').
    """
    from .scoring import substring_correct

    hits: dict[str, list[bool]] = {}
    for row in rows:
        if row.get("status") == "ok":
            label = row["label"].split("-")[0] if cut_at_hyphen else row["label"]
            hits.setdefault(label, []).append(substring_correct(label, row["pred"]))
    return {label: sum(v) / len(v) for label, v in hits.items()}


def probe_class_accuracy(score: dict, classes: list[str]) -> dict[str, float]:
    """Per-class accuracy (0-1) of a probe's best-epoch predictions, keyed by the class-list name of the target."""
    hits: dict[str, list[bool]] = {}
    for target, prediction in score["predictions"]:
        hits.setdefault(classes[target], []).append(target == prediction)
    return {label: sum(v) / len(v) for label, v in hits.items()}


def correlate(frequency: dict[str, int], accuracy: dict[str, float]) -> dict:
    """Spearman and Pearson of (frequency of label.lower(), class accuracy), and the Figure 3 bins."""
    from scipy.stats import pearsonr, spearmanr

    xs = [frequency.get(label.lower(), 0) for label in accuracy]
    ys = list(accuracy.values())
    result: dict = {"n_pairs": len(xs)}
    if len(set(ys)) < 2 or len(set(xs)) < 2:
        constant = "accuracy" if len(set(ys)) < 2 else "frequency"
        result.update(spearman_r=None, pearson_r=None, na_reason=f"N/A: {constant} is the same for every class")
    else:
        result.update(spearman_r=float(spearmanr(xs, ys).statistic), pearson_r=float(pearsonr(xs, ys).statistic))
    bins = []
    for lo, hi in zip(BIN_EDGES[:-1], BIN_EDGES[1:]):
        inside = [y for x, y in zip(xs, ys) if lo <= x < hi]
        # upstream's +1e-3 gives an empty bin 0 %; it has no accuracy at all
        bin_accuracy = 100 * sum(inside) / (len(inside) + 1e-3) if inside else None
        bins.append({"lo": lo, "hi": hi, "n": len(inside), "accuracy": bin_accuracy})
    result["bins"] = bins
    result["pairs"] = [{"label": label, "frequency": x, "accuracy": y} for label, x, y in zip(accuracy, xs, ys)]
    return result
