"""Query planning reproduces the upstream random stream (docs/protocol.md#item-order-and-random-stream) exactly."""

import random

import pytest

from vlmrepro.queries import closed_world_question, plan_queries, resolve_n_labels


def upstream_reference(rows, classes, seed, n_labels, fixed_order=False):
    """The upstream algorithm as written in main_results/main.py: global random, seeded once, shuffle, then per row
    sample from the sorted pool of the other names, prepend the label, shuffle."""
    random.seed(seed)
    data = list(rows)
    random.shuffle(data)
    out = []
    for item in data:
        if n_labels is None:
            out.append((item["row"], None))
        elif fixed_order:
            out.append((item["row"], list(classes)))
        else:
            label = item["label"]
            other_choices = random.sample(sorted(list(set(classes) - set([label]))), n_labels - 1)
            shuffled_choices = [label] + other_choices
            random.shuffle(shuffled_choices)
            out.append((item["row"], shuffled_choices))
    return out


def make_rows(classes, n):
    rng = random.Random(7)
    return [
        {"row": i, "image": f"./data/x/{i}.jpg", "path": f"/x/{i}.jpg", "label": rng.choice(classes), "split": "test"}
        for i in range(n)
    ]


CLASSES = [f"class {chr(65 + i)}{i}" for i in range(30)] + ["Zebra", "ant", "elephant", "ant"]  # duplicate, mixed case


@pytest.mark.parametrize("n_labels", [None, 2, 5, 20, len(set(CLASSES))])
def test_plan_matches_upstream_stream(n_labels):
    rows = make_rows(CLASSES, 200)
    candidates = "none" if n_labels is None else n_labels
    plan = plan_queries(rows, CLASSES, "What type of object is in this photo?", 1234, candidates=candidates)
    reference = upstream_reference(rows, CLASSES, 1234, n_labels)
    assert [(q["row"], q["choices"]) for q in plan] == reference
    assert [q["item"] for q in plan] == list(range(200))


def test_fixed_order_uses_class_file_order_with_duplicates():
    rows = make_rows(CLASSES, 20)
    plan = plan_queries(rows, CLASSES, "Q?", 1234, candidates="all", order="fixed")
    assert all(q["choices"] == CLASSES for q in plan)
    assert [q["row"] for q in plan] == [r for r, _ in upstream_reference(rows, CLASSES, 1234, None)]


def test_all_candidates_is_every_unique_name_in_fresh_order():
    rows = make_rows(CLASSES, 50)
    plan = plan_queries(rows, CLASSES, "Q?", 1234, candidates="all")
    for q in plan:
        assert sorted(q["choices"]) == sorted(set(CLASSES))
        assert q["label"] in q["choices"]
    assert len({tuple(q["choices"]) for q in plan}) > 1


def test_plan_is_independent_of_everything_but_its_inputs():
    rows = make_rows(CLASSES, 64)
    first = plan_queries(rows, CLASSES, "Q?", 1234, candidates=5)
    random.seed(99)  # global random state must not matter: the plan uses its own generator
    random.random()
    assert plan_queries(rows, CLASSES, "Q?", 1234, candidates=5) == first
    assert plan_queries(rows, CLASSES, "Q?", 4321, candidates=5) != first


def test_cpython_random_stream_regression():
    """Pins the seed-1234 stream itself (upstream ran CPython 3.10): if a Python release changed shuffle or
    sample, every candidate list of the paper would silently change."""
    rng = random.Random(1234)
    items = list(range(10))
    rng.shuffle(items)
    assert items == [2, 8, 3, 5, 6, 4, 9, 0, 1, 7]
    assert rng.sample(sorted("abcdefghij"), 3) == ["d", "a", "i"]


def test_closed_world_question_is_upstream_format():
    assert (
        closed_world_question("What type of object is in this photo?", ["tench", "goldfish", "great white shark"])
        == 'What type of object is in this photo? Choose one from "tench, goldfish, great white shark".'
    )


def test_skip_marks_are_carried_and_limit_truncates_after_shuffle():
    rows = make_rows(CLASSES, 30)
    rows[3]["skip"] = "missing"
    plan = plan_queries(rows, CLASSES, "Q?", 1234, limit=10)
    full = plan_queries(rows, CLASSES, "Q?", 1234)
    assert plan == full[:10]
    assert [q.get("skip") for q in full if q["row"] == 3] == ["missing"]


@pytest.mark.parametrize("bad", [1, 0, 999, "some"])
def test_bad_candidate_counts_are_rejected(bad):
    with pytest.raises(ValueError):
        resolve_n_labels(bad, CLASSES)
