"""Section 4 and appendix pieces without models: Table 8 synonym scoring, the ImageNet + LLaVA instruction mix
(paper §4.3), and reading lmms-eval's results for Table 13."""

import json
import random

import pytest
from PIL import Image

from vlmrepro.harness import lmms_eval_command, read_lmms_eval_score
from vlmrepro.datasets import ManifestError
from vlmrepro.instruction_mix import build_mix
from vlmrepro.scoring import parse_synonyms, score_synonyms

GIST_LIKE = """{0: 'tench, Tinca tinca',
 1: 'goldfish, Carassius auratus',
 2: 'missile',
 3: 'projectile, missile'}"""


def test_synonym_file_is_a_python_dict_literal():
    table = parse_synonyms(GIST_LIKE)
    assert table[0] == ["tench", "Tinca tinca"] and table[3] == ["projectile", "missile"]
    with pytest.raises(ValueError, match="synonyms.txt: not a Python dict literal"):
        parse_synonyms("{0: 'a',", source="synonyms.txt")


def test_any_name_of_the_rows_own_class_counts():
    classes = ["tench", "goldfish", "missile", "missile"]  # ImageNet names two classes 'missile'
    rows = [
        {"status": "ok", "label": "tench", "pred": "A Tinca tinca on grass"},
        {"status": "ok", "label": "goldfish", "pred": "an orange fish"},
        {"status": "ok", "label": "missile", "pred": "a projectile"},  # class 3's synonym
        {"status": "ok", "label": "missile", "pred": "a projectile"},  # class 2 has no such synonym
    ]
    result = score_synonyms(rows, [0, 1, 3, 2], classes, parse_synonyms(GIST_LIKE))
    assert result["accuracy"] == pytest.approx(50.0)
    assert result["accuracy_without_synonyms"] == pytest.approx(0.0)
    assert result["improvement_delta"] == pytest.approx(50.0)


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)
    return str(path)


def test_instruction_mix_concatenates_shuffles_and_drops_missing_images(tmp_path):
    imagenet = [{"path": _image(tmp_path / "in" / f"{i}.png"), "label": f"class {i}"} for i in range(3)]
    _image(tmp_path / "coco" / "train2017" / "a.jpg")
    corpus = [
        {"id": "a", "image": "coco/train2017/a.jpg", "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]},
        {"id": "b", "image": "coco/train2017/missing.jpg", "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ]
    examples, report = build_mix(imagenet, corpus, {"coco": str(tmp_path / "coco")}, "SYS USER: <image>\nWhat? ASSISTANT:", "SYS", 1234)
    assert report["n_dropped_missing_image"] == 1 and report["n_text_only"] == 1 and report["n_examples"] == 5
    # upstream: ImageNet first, then the corpus, one random.Random(1234) shuffle of the concatenation
    order = list(range(6))
    random.Random(1234).shuffle(order)
    expected = [i for i in order if i != 4]  # index 4 = the record whose image is missing
    names = [f"class {i}" for i in range(3)] + ["A", "A", "Hello"]
    assert [e["segments"][-1][1] for e in examples] == [names[i] for i in expected]
    assert {"path": None, "segments": [["SYS USER: Hi ASSISTANT:", "Hello"]]} in examples
    doubled, report = build_mix(imagenet, corpus, {"coco": str(tmp_path / "coco")}, "P", "SYS", 1234, 2)
    labels = sorted(e["segments"][-1][1] for e in doubled if e["path"] and "class" in e["segments"][-1][1])
    assert labels == sorted(2 * [f"class {i}" for i in range(3)]) and report["n_examples"] == 8


def test_instruction_mix_names_an_image_source_without_a_root(tmp_path):
    corpus = [{"id": "x", "image": "gqa/images/1.jpg", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}]
    with pytest.raises(ManifestError, match=r"record 0 \(id x\).*'gqa'.*mix.image_roots"):
        build_mix([], corpus, {"coco": "/data/coco"}, "P", "SYS", 1234)


def test_lmms_eval_results_are_read_and_scaled(tmp_path):
    out = tmp_path / "raw" / "models__llava"
    out.mkdir(parents=True)
    results = {"results": {"pope_pop": {"alias": "pope_pop", "pope_f1_score,none": 0.861, "pope_accuracy,none": 0.87, "pope_f1_score_stderr,none": "N/A"}}}
    (out / "2026-11-26T10-00-00_results.json").write_text(json.dumps(results))
    run = {"task": "pope_pop", "metric": "pope_f1_score", "filter": "none", "scale": 100}
    score = read_lmms_eval_score(tmp_path / "raw", run)
    assert score["accuracy"] == pytest.approx(86.1) and score["harness_metrics"]["pope_accuracy"] == 0.87
    with pytest.raises(KeyError, match="no metric 'exact_match,none'"):
        read_lmms_eval_score(tmp_path / "raw", {**run, "metric": "exact_match"})
    with pytest.raises(FileNotFoundError, match="wrote no"):
        read_lmms_eval_score(tmp_path / "empty", run)


def test_lmms_eval_command_targets_the_model_directory(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # the harness lives in its own env
    run = {"family": "llava", "dtype": "bfloat16", "task": "textvqa_val", "batch_size": 1}
    command = lmms_eval_command("python", "/abs/models/llava-mix-imagenet", run, "raw")
    assert command[:5] == ["python", "-m", "lmms_eval", "--model", "llava_hf"]
    assert "pretrained=/abs/models/llava-mix-imagenet,dtype=bfloat16" in command
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="lmms-eval is not installed"):
        lmms_eval_command("python", "/m", run, "raw")
