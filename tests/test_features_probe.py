"""Feature extraction into shards and the linear probes trained on them."""

import numpy as np
import pytest
import torch
from PIL import Image

from vlmrepro import features
from vlmrepro.models import ClipModel, VisionLanguageModel
from vlmrepro.probe import run_probe
from vlmrepro.queries import plan_queries

CLASSES = ["red circle", "blue square", "green triangle"]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("img")
    out = []
    for i in range(9):
        path = folder / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (30 + 4 * i, 40, 3), dtype=np.uint8)).save(path)
        out.append({"row": i, "image": f"./data/x/{i}.png", "path": str(path), "label": CLASSES[i % 3],
                    "split": "train" if i < 6 else "test"})
    return out


@pytest.mark.parametrize("family", ["llava", "llava_next", "blip2"])
def test_vlm_features_positions_and_shards(family, tiny_models, rows, tmp_path):
    vlm = VisionLanguageModel(tiny_models / family, family, device="cpu")
    prompt = "Question: What? Answer:" if family == "blip2" else "USER: <image>\nWhat?\nASSISTANT:"
    positions = ["last", "avg", 0, 2, -2, 10_000]
    queries = plan_queries(rows, CLASSES, "What?", 1234, shuffle=True)
    encode = lambda images: features.vlm_features(vlm, images, prompt, positions)
    index = features.extract(encode, queries, CLASSES, positions, tmp_path / "f", batch_size=4, shard_size=4, log=lambda _: None)
    assert index["n_items"] == 9 and [s["n_items"] for s in index["shards"]] == [4, 4, 1]
    last = features.load(tmp_path / "f", "last")
    assert list(last["row"]) == [q["row"] for q in queries]  # shuffled order kept, ids stored
    assert list(last["split"]) == [q["split"] for q in queries]
    assert last["features"].dtype == np.float32 and last["features"].shape[1] == 64
    assert np.isnan(features.load(tmp_path / "f", "10000")["features"]).all()  # beyond the sequence: missing
    # a batched row equals the same image alone (left padding is skipped by position indexing)
    alone, _, _ = features.vlm_features(vlm, [Image.open(queries[1]["path"]).convert("RGB")], prompt, positions)
    with np.load(tmp_path / "f" / "shard-00000.npz") as npz:
        np.testing.assert_allclose(npz["features"][1, :5].astype(np.float32), alone[0, :5], atol=2e-2)


def test_items_past_the_context_are_listed_with_their_reason_and_left_out_of_the_probe(rows, tmp_path):
    """LLaVA-NeXT's image tokens depend on the image's size: with 90 positions the two tallest training images (102
    tokens) cannot be read. They are listed in the index with the counts, never truncated, and the probe trains
    without them and says so."""
    from vlmrepro.demo.tiny import build_tiny

    build_tiny("llava_next", tmp_path / "m", {"text_model": "mistral", "tokenizer": "real", "max_context": 90})
    vlm = VisionLanguageModel(tmp_path / "m", "llava_next", device="cpu")
    queries = plan_queries(rows, CLASSES, "What?", 1234, shuffle=False)
    encode = lambda images: features.vlm_features(vlm, images, "USER: <image>\nWhat?\nASSISTANT:", ["last"])
    index = features.extract(encode, queries, CLASSES, ["last"], tmp_path / "f", 4, 4, log=lambda _: None)
    reason = "prompt needs 102 tokens, more than the model's context of 90"
    assert index["context_overflow"] == [{"item": q["item"], "split": "train", "reason": reason} for q in queries[2:4]]
    data = features.load(tmp_path / "f", "last")
    assert list(data["row"]) == [0, 1, 4, 5, 6, 7, 8] and not np.isnan(data["features"]).any()
    result = run_probe(data, 3, "test", epochs=2)
    assert result["n_train_context_overflow"] == 2 and result["n_train"] == 4 and result["not_evaluated"] == {}
    data["context_overflow_split"] = np.array(["test"])  # an evaluated item past the context: counted, not scored
    result = run_probe(data, 3, "test", epochs=2)
    assert result["n_items"] == 4 and result["n_evaluated"] == 3 and result["not_evaluated"] == {"context_overflow": 1}


def test_clip_features_are_unit_norm(tiny_models, rows, tmp_path):
    clip = ClipModel(tiny_models / "open_clip", device="cpu")
    queries = plan_queries(rows, CLASSES, "", 1234, shuffle=False)
    features.extract(lambda imgs: (features.clip_features(clip, imgs), None, None), queries, CLASSES, ["embedding"], tmp_path, 4, 100, log=lambda _: None)
    data = features.load(tmp_path, "embedding")
    assert list(data["row"]) == list(range(9))  # manifest order
    np.testing.assert_allclose(np.linalg.norm(data["features"], axis=1), 1, atol=1e-2)


def test_feature_jobs_gather_byte_identically_and_a_killed_job_resumes(tiny_models, rows, tmp_path):
    """Files written by 1 or 3 jobs and gathered are the same bytes; a job killed after two batches encodes only
    the rest on its rerun, from the write-ahead log of finished batches."""
    from types import SimpleNamespace

    from vlmrepro.jobs import gather_features

    vlm = VisionLanguageModel(tiny_models / "llava", "llava", device="cpu")
    calls = []

    def encode(images):
        calls.append(len(images))
        return features.vlm_features(vlm, images, "USER: <image>\nWhat?\nASSISTANT:", ["last", "avg"])

    queries = plan_queries(rows, CLASSES, "What?", 1234, shuffle=True)
    args = (queries, CLASSES, ["last", "avg"])

    def run(folder, jobs, **kw):
        parts = [tmp_path / f"{folder}-{j}" for j in range(jobs)]
        for j, part in enumerate(parts):
            features.extract(encode, *args, part, 2, 4, log=lambda _: None, job=(j, jobs), **kw)
        out = tmp_path / folder
        gather_features([str(p) for p in parts], [str(out)], [str(tmp_path / f"{folder}.log")])
        return {f.name: f.read_bytes() for f in sorted(out.iterdir())}

    one = run("one", 1)
    assert run("three", 3) == one and list(one) == ["index.json", "shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]

    cache = tmp_path / "cache"
    context = {"model": "tiny-llava"}

    def killed_after_two_batches(images):
        if len(calls) == 2:
            raise KeyboardInterrupt  # SIGKILL stand-in: the job dies between batches
        return encode(images)

    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        features.extract(killed_after_two_batches, *args, tmp_path / "k", 2, 4, log=lambda _: None, cache_dir=cache, cache_context=context)
    calls.clear()
    assert run("resumed", 1, cache_dir=cache, cache_context=context) == one
    assert sum(calls) == 9 - 4  # two batches of 2 came from the log
    calls.clear()
    run("other", 1, cache_dir=cache, cache_context={"model": "another"})
    assert sum(calls) == 9  # another setting never reuses them


def learnable(n_train=300, n_eval=90, dim=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 3
    y = rng.integers(0, classes, n_train + n_eval)
    x = centers[y] + rng.normal(size=(len(y), dim))
    return {
        "features": x.astype(np.float32),
        "class_index": y,
        "label_idx": np.full(len(y), -1),
        "split": np.array(["train"] * n_train + ["test"] * n_eval),
    }


def test_probe_learns_and_reports_both_selections():
    result = run_probe(learnable(), 4, "test", epochs=30, batch_size=64)
    assert result["curve"][-1]["loss"] < result["curve"][0]["loss"]
    assert result["accuracy"] > 90
    assert 1 <= result["best_epoch"] <= 30 and 1 <= result["heldout_epoch"] <= 30
    best = sum(t == p for t, p in result["predictions"]) / len(result["predictions"])
    assert 100 * best == pytest.approx(result["accuracy"])  # the stored predictions are the best epoch's
    assert result["accuracy_heldout_epoch"] <= result["accuracy"]  # best-on-eval is the optimistic bound


def test_probe_is_deterministic_given_its_seed():
    data = learnable()
    one = run_probe(data, 4, "test", epochs=5, batch_size=64, seed=3, reshuffle=True)
    two = run_probe(data, 4, "test", epochs=5, batch_size=64, seed=3, reshuffle=True)
    assert one["curve"] == two["curve"]


def test_probe_with_missing_positions_is_na():
    data = learnable()
    data["features"][0, 0] = np.nan
    assert run_probe(data, 4, "test", epochs=2)["accuracy"] is None


def test_label_idx_targets_when_present():
    data = learnable()
    data["label_idx"] = data["class_index"]
    assert run_probe(data, 4, "test", epochs=2, labels="label_idx")["labels"] == "label_idx"
    with pytest.raises(ValueError, match="split"):
        run_probe(dict(data, split=np.array(["train"] * len(data["split"]))), 4, "test", epochs=1)
