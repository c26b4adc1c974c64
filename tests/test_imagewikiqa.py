"""ImageWikiQA (Table 5): the upstream multiple-choice parser, the w/ GT Class variant, baselines and image look-up
by file name."""

import json
import random

import pytest
from PIL import Image

from vlmrepro.datasets import ManifestError, prepare_split
from vlmrepro.imagewikiqa import (
    answer_texts,
    baselines,
    parse_choice,
    read_questions,
    resolve_by_file_name,
    score_mcq,
    with_class_name,
)

TEXT = (
    "Which position is particularly important for this object when transporting a patient in shock?\n"
    "A. Fowler's position\nB. Upright position\nC. Trendelenburg position\nD. Flat position\nChoose A, B, C, or D."
)
CHOICES = answer_texts(TEXT)


def test_choice_texts_come_from_the_lettered_lines_also_inside_a_chat_template():
    assert CHOICES == {"A": "Fowler's position", "B": "Upright position", "C": "Trendelenburg position", "D": "Flat position"}
    assert answer_texts(f"USER: <image>\n{TEXT}\nASSISTANT: Let's think step by step.") == CHOICES


@pytest.mark.parametrize(
    "response, expected",
    [
        ("(C)", "C"),  # bracket pass
        ("The answer is (B) because (A) is wrong... no wait, (D)", "D"),  # several brackets: the last one wins
        ("C.", "C"),  # the sequential strip removes the period, then ' C ' matches
        ("I think B is right", "B"),  # space pass
        ("So A or maybe D is it", "D"),  # several letters: last occurrence
        ("Let's think step by step. Patients in shock are laid in the trendelenburg position", "C"),  # content
        ("Let's think step by step. Upright position is wrong; the flat position is right", "D"),  # last content
        ("'B'", "B"),  # quotes stripped
    ],
)
def test_parser_follows_the_upstream_passes(response, expected):
    letter, fallback = parse_choice(response, CHOICES, random.Random(0))
    assert (letter, fallback) == (expected, False)


def test_content_match_needs_more_than_five_words_else_a_seeded_random_guess():
    rng_a, rng_b = random.Random(1234), random.Random(1234)
    guesses = [parse_choice("flat position", CHOICES, rng_a) for _ in range(20)]
    assert all(fallback for _, fallback in guesses)
    assert [g for g, _ in guesses] == [rng_b.choice("ABCD") for _ in range(20)]


def test_mcq_scores_are_deterministic_and_count_random_fallbacks():
    rows = [
        {"status": "ok", "label": "C", "prompt": TEXT, "pred": "Let's think step by step. (C)"},
        {"status": "ok", "label": "A", "prompt": TEXT, "pred": "Let's think step by step. no idea"},
        {"status": "skipped_image", "label": "B", "prompt": TEXT},
    ]
    first, again = score_mcq(rows, seed=1234), score_mcq(rows, seed=1234)
    assert first == again
    assert first["n_random_fallback"] == 1 and first["n_evaluated"] == 2
    assert first["not_evaluated"] == {"skipped_image": 1}
    expected_guess = random.Random(1234).choice("ABCD")
    assert first["accuracy"] == 100 * (1 + (expected_guess == "A")) / 2


def test_a_response_is_parsed_as_it_is_given():
    """model_vqa's generation alone: "Flat position" has too few words for a content match, so it is a random
    guess; with the chain-of-thought prefix in front, the six words content-match D."""
    row = {"status": "ok", "label": "D", "prompt": TEXT, "pred": "Let's think step by step. Flat position"}
    assert score_mcq([row])["n_random_fallback"] == 0 and score_mcq([row])["accuracy"] == 100
    assert score_mcq([{**row, "pred": "Flat position"}])["n_random_fallback"] == 1


@pytest.mark.parametrize(
    "question, expected",
    [
        ("What is this object used for?", "What is stretcher used for?"),
        ("This object is carried by how many people?", "Stretcher is carried by how many people?"),
        ("Where are these objects stored?", "Where are stretchers stored?"),
        ("Is this object or this object lighter?", "Is stretcher or stretcher lighter?"),
    ],
)
def test_gt_class_variant_names_the_object_in_the_question_line_only(question, expected):
    text = question + "\nA. this object\nB. b\nC. c\nD. d\nChoose A, B, C, or D."
    out = with_class_name(text, "stretcher")
    assert out.split("\n")[0] == expected
    assert out.split("\n")[1:] == text.split("\n")[1:]


def test_baselines_random_and_most_frequent_letter():
    rows = [{"label": l, "text": f"q{i % 3}"} for i, l in enumerate("AABCD" * 2 + "A")]
    result = baselines(rows)
    assert result["random"]["accuracy"] == 25.0
    assert result["max_frequency"]["letter"] == "A"
    assert result["max_frequency"]["accuracy"] == pytest.approx(100 * 5 / 11)
    assert result["max_frequency"]["n_unique_questions"] == 3


def _write_questions(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_question_file_rows_are_checked(tmp_path):
    good = {"image": "images/x.JPEG", "text": TEXT, "label": "C", "classname": "stretcher", "wiki": ""}
    _write_questions(tmp_path / "q.jsonl", [good, {**good, "label": "E"}])
    with pytest.raises(ManifestError, match=r"q.jsonl: row 2 has label 'E'"):
        read_questions(tmp_path / "q.jsonl")
    _write_questions(tmp_path / "q.jsonl", [good, {k: v for k, v in good.items() if k != "classname"}])
    with pytest.raises(ManifestError, match="row 2 lacks field"):
        read_questions(tmp_path / "q.jsonl")


def test_images_are_found_by_file_name_and_missing_ones_counted(tmp_path):
    """ImageNet val in wnid folders; one question's image is absent: the row stays (file order) and is skipped."""
    val = tmp_path / "imagenet" / "val"
    for wnid, name in (("n01", "ILSVRC2012_val_00000001.JPEG"), ("n02", "ILSVRC2012_val_00000002.JPEG")):
        (val / wnid).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(val / wnid / name, format="JPEG")
    rows = [
        {"image": f"images/ILSVRC2012_val_0000000{i}.JPEG", "text": TEXT, "label": "C", "classname": "x"}
        for i in (2, 3, 1)
    ]
    _write_questions(tmp_path / "q.jsonl", rows)
    manifest, report = resolve_by_file_name(read_questions(tmp_path / "q.jsonl"), val, "./wikiqa/")
    assert report["n_missing_images"] == 1 and report["missing"] == ["ILSVRC2012_val_00000003.JPEG"]
    assert manifest[0]["image"] == "./wikiqa/n02/ILSVRC2012_val_00000002.JPEG"
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest))
    (tmp_path / "c.json").write_text(json.dumps(list("ABCD")))
    split, split_report = prepare_split(tmp_path / "m.jsonl", tmp_path / "c.json", "test", "./wikiqa/", val, on_bad_image="skip")
    assert [r.get("skip") for r in split] == [None, "missing", None]
    assert split_report["n_skipped"] == 1


def test_table_cell_shows_the_random_fallbacks_beside_the_accuracy():
    from vlmrepro.paper import load_paper_results
    from vlmrepro.tables import build_table

    cell = {
        "model": "llava-1.5-7b", "paper_model": "LLaVA1.5-7B", "dataset": "imagewikiqa", "paper_dataset": "imagewikiqa",
        "setting": "imagewikiqa", "paper_setting": "Public VLM",
        "score": {"accuracy": 40.0, "n_random_fallback": 12, "n_evaluated": 1999, "n_items": 2000,
                  "not_evaluated": {"skipped_image": 1}},
    }  # fmt: skip
    not_reproduced = [{"paper_model": "Human", "paper_setting": "Naive Baselines: w/ GT Class+Wiki", "reason": "humans"}]
    frame = build_table([cell], load_paper_results(), "Table 5", not_reproduced)
    row = frame.iloc[0]
    assert (row.ours, row.paper, row.delta) == (40.0, 38.0, 2.0)
    assert row.note == "computed on 1,999 of 2,000 items (1 skipped image); 12 random fallback(s)"
    assert frame.iloc[1].paper == 96.5 and frame.iloc[1].note == "not reproduced: humans"
