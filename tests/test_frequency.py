"""Class-name frequency counting with the upstream rule (docs/protocol.md#frequency-counting) and the correlations
of Table 11."""

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from vlmrepro.frequency import (
    BIN_EDGES, combine, corpus_sentences, correlate, count_classes, per_class_accuracy, word_tokens,
)


def records(*texts):
    return [{"conversations": [{"from": "gpt", "value": t}]} for t in texts]


def test_sentences_are_split_tokenised_and_lowercased_offline():
    out = list(corpus_sentences(records("<image>\nA Goldfish swims. Mr. Smith owns a St. Bernard here!")))
    assert out == [["a", "goldfish", "swims", "."], ["mr.", "smith", "owns", "a", "st.", "bernard", "here", "!"]]
    turns = list(corpus_sentences(records("One. Two."), unit="turn"))
    assert turns == [["one", ".", "two", "."]]


def test_upstream_counting_rule_with_its_edge_cases():
    classes = ["goldfish", "great white shark", "missile", "missile", "tench", "kite (bird of prey)"]
    sentences = [
        ["a", "goldfish", "swims", "."],              # interior: counted
        ["goldfish", "are", "orange"],                 # first token: not counted (needs a token before)
        ["i", "like", "goldfish"],                     # last token: not counted
        ["a", "great", "white", "shark", "!"],         # multi-token name
        ["a", "great", "shark", "white", "."],         # tokens present but not contiguous: not counted
        ["the", "missile", "flew", "."],               # duplicated class entry: counted twice
        ["a", "tench", "and", "a", "tench", "."],      # once per sentence, however often it occurs
        ["a", "kite", "(", "bird", "of", "prey", ")", "."],
    ]
    counts = dict(count_classes(sentences, classes))
    assert counts == {"goldfish": 1, "great white shark": 1, "missile": 2, "tench": 1, "kite ( bird of prey )": 1}


def test_counting_matches_the_plain_string_rule_when_tokens_hold_hashes():
    classes = ["a#b", "c"]
    sentences = [["x", "a#b", "y"], ["x", "a", "#", "b", "y"], ["z", "c", "##", "q"]]
    brute = {}
    for name in classes:
        toks = word_tokens(name.lower())
        needle = "##" + "##".join(toks) + "##"
        brute[" ".join(toks)] = sum(needle in "##".join(s) for s in sentences)
    assert dict(count_classes(sentences, classes)) == {k: v for k, v in brute.items() if v}


def test_counts_are_sorted_by_count_descending():
    sentences = [["a", "cat", "."]] * 3 + [["a", "dog", "."]] * 5
    assert count_classes(sentences, ["cat", "dog"]) == [("dog", 5), ("cat", 3)]


def test_combined_frequency_keeps_only_pretraining_keys():
    assert combine({"cat": 2, "dog": 1}, {"dog": 4, "bird": 9}) == {"cat": 2, "dog": 5}


def test_per_class_accuracy_uses_the_substring_rule():
    rows = [
        {"status": "ok", "label": "ant", "pred": "an elephant"},
        {"status": "ok", "label": "ant", "pred": "a dog"},
        {"status": "ok", "label": "dog", "pred": "Dog."},
        {"status": "context_overflow", "label": "dog"},
    ]
    assert per_class_accuracy(rows) == {"ant": 0.5, "dog": 1.0}


def test_correlations_and_bins_against_scipy():
    rng = np.random.default_rng(0)
    freq = {f"class {i}": int(f) for i, f in enumerate(rng.integers(0, 20000, 40))}
    acc = {f"Class {i}": float(a) for i, a in enumerate(rng.random(40))}  # looked up by label.lower()
    result = correlate(freq, acc)
    xs = [freq[k.lower()] for k in acc]
    assert result["spearman_r"] == pytest.approx(spearmanr(xs, list(acc.values())).statistic)
    assert result["pearson_r"] == pytest.approx(pearsonr(xs, list(acc.values())).statistic)
    assert [b["lo"] for b in result["bins"]] == BIN_EDGES[:-1]
    assert sum(b["n"] for b in result["bins"]) == 40
    for b in result["bins"]:
        inside = [a for k, a in acc.items() if b["lo"] <= freq[k.lower()] < b["hi"]]
        expected = 100 * sum(inside) / (len(inside) + 1e-3) if inside else None  # an empty bin has no accuracy
        assert b["accuracy"] == (pytest.approx(expected) if inside else None)
    assert any(b["n"] == 0 for b in result["bins"]) and any(b["n"] for b in result["bins"])


def test_constant_accuracy_is_na():
    result = correlate({"a": 1, "b": 5}, {"a": 0.0, "b": 0.0})
    assert result["spearman_r"] is None and "accuracy is the same" in result["na_reason"]


def test_probe_predictions_give_per_class_accuracy():
    from vlmrepro.frequency import probe_class_accuracy

    score = {"predictions": [[0, 0], [0, 1], [1, 1], [2, 0]]}
    assert probe_class_accuracy(score, ["cat", "dog", "bird"]) == {"cat": 0.5, "dog": 1.0, "bird": 0.0}


def test_upstream_fine_tuned_label_parse_cuts_at_the_first_hyphen():
    rows = [{"status": "ok", "label": "black-eyed susan", "pred": "a black flower"}]
    assert per_class_accuracy(rows) == {"black-eyed susan": 0.0}
    assert per_class_accuracy(rows, cut_at_hyphen=True) == {"black": 1.0}  # upstream's hyphen cut
