"""Probabilistic inference: packed class scoring (one pass per chunk over the shared context) equals the upstream one-class, one-token-at-a-time loop, and
the Sum / Avg / CFG scores follow docs/protocol.md#probabilistic-inference-scores."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlmrepro.loglik import (
    class_token_ids,
    continuation_logprobs,
    per_class_logprobs,
    run_loglik,
    upstream_continuation_logprobs,
)
from vlmrepro.models import VisionLanguageModel
from vlmrepro.queries import plan_queries
from vlmrepro.scoring import score_loglik

CLASSES = ["red circle", "blue square", "green triangle", "ant", "elephant", "yellow diamond", "ant"]
LLAVA_CONTEXT = "USER: <image>\nWhat type of object is in this photo?\nASSISTANT: The photo features a"
BLIP_TEMPLATE = "Question: {question} Answer: A {label}"


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def llava(tiny_models):
    return VisionLanguageModel(tiny_models / "llava", "llava", device="cpu")


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_batched_continuation_equals_upstream_loop(llava, image, chunk):
    ids = class_token_ids(llava.tokenizer, CLASSES)
    assert len({len(i) for i in ids}) > 1  # ragged lengths are exercised
    reference = upstream_continuation_logprobs(llava, image, LLAVA_CONTEXT, ids)
    batched = continuation_logprobs(llava, image, LLAVA_CONTEXT, ids, chunk=chunk)
    for ref, got in zip(reference, batched):
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_class_ids_drop_bos_and_reject_tokenizers_without_it(llava):
    ids = class_token_ids(llava.tokenizer, ["red circle"])[0]
    assert ids == llava.tokenizer("red circle")["input_ids"][1:]

    class NoBos:
        bos_token_id = 1

        def __call__(self, text):
            return {"input_ids": [5, 6]}

    with pytest.raises(ValueError, match="BOS"):
        class_token_ids(NoBos(), ["x"])


def test_per_class_reads_the_last_len_ids_positions(tiny_models, image):
    vlm = VisionLanguageModel(tiny_models / "blip2", "blip2", device="cpu")
    ids = class_token_ids(vlm.tokenizer, CLASSES)
    batched = per_class_logprobs(vlm, image, BLIP_TEMPLATE, "What?", CLASSES, ids, chunk=4)
    for name, target, got in zip(CLASSES, ids, batched):
        single = vlm.encode([image], [BLIP_TEMPLATE.replace("{question}", "What?").replace("{label}", name)])
        with torch.inference_mode():
            logp = torch.log_softmax(vlm.model(**single).logits.float(), -1)[0]
        expected = [float(logp[-len(target) - 1 + k, t]) for k, t in enumerate(target)]
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_run_loglik_records_and_text_prior(llava, tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(path)
        paths.append({"row": i, "image": f"./data/x/{i}.png", "path": str(path), "label": CLASSES[i], "split": "test"})
    paths[2]["skip"] = "missing"
    queries = plan_queries(paths, CLASSES, "What type of object is in this photo?", 1234)
    template = "USER: <image>\n{question}\nASSISTANT: The photo features a"
    records, arrays = run_loglik(llava, queries, CLASSES, template, "continuation", "What type of object is in this photo?", 4, "r", text_prior=True, log=lambda _: None)
    assert [r["status"] for r in records].count("skipped_image") == 1
    assert arrays["token_logprobs"].shape == (3, arrays["class_offsets"][-1])
    assert arrays["prior"].shape == (arrays["class_offsets"][-1],)
    assert list(arrays["label_index"]) == [CLASSES.index(q["label"]) for q in queries]
    result = score_loglik(records, arrays, text_prior_alphas=range(3))
    assert result["n_evaluated"] == 2 and "accuracy_cfg_text_prior" in result

    # with a write-ahead cache a rerun scores nothing again and gives the same bytes
    from vlmrepro.cache import WriteAheadCache

    args = (llava, queries, CLASSES, template, "continuation", "What type of object is in this photo?", 4, "r")
    cached = dict(cache=WriteAheadCache(tmp_path / "c.jsonl"), cache_context={"m": 1})
    first = run_loglik(*args, log=lambda _: None, **cached)
    logs = []
    again = run_loglik(*args, log=logs.append, cache=WriteAheadCache(tmp_path / "c.jsonl"), cache_context={"m": 1})
    assert logs[-1].endswith("(2 from the cache, 0 past the context)") and again[0] == first[0]
    assert again[1]["token_logprobs"].tobytes() == first[1]["token_logprobs"].tobytes()


def test_scores_follow_the_upstream_formulas():
    # 2 classes: class 0 has 1 token, class 1 has 2 tokens; 3 images
    offsets = np.array([0, 1, 3])
    tokens = np.array(
        [[-1.0, -0.2, -0.2], [-3.0, -1.0, -0.5], [-0.1, -2.0, -2.0]], dtype=np.float32
    )  # sums: [-1, -0.4], [-3, -1.5], [-0.1, -4]; avgs: [-1, -0.2], [-3, -0.75], [-0.1, -2]
    labels = np.array([0, 1, 0])
    records = [{"status": "ok"}] * 3
    result = score_loglik(records, {"token_logprobs": tokens, "class_offsets": offsets, "label_index": labels}, alphas=[0, 1, 2])
    assert result["accuracy_sum"] == pytest.approx(200 / 3)  # argmax sums: 1, 1, 0
    assert result["accuracy_avg"] == pytest.approx(200 / 3)  # argmax avgs: 1, 1, 0
    # prior sums: mean tokens [-1.3667, -1.0667, -0.9] -> class sums [-1.3667, -1.9667]
    # alpha=2: 2*sum - prior: img0 [-0.633, 1.167] -> 1 ; img1 [-4.633, -1.033] -> 1 ; img2 [1.167, -6.033] -> 0
    assert result["cfg_grid"] == {"0": pytest.approx(200 / 3), "1": pytest.approx(200 / 3), "2": pytest.approx(200 / 3)}
    assert result["cfg_best_alpha"] == 0.0  # first best alpha on ties
    assert result["top5_sum"] == 100.0


def test_duplicate_names_only_first_index_counts():
    offsets = np.array([0, 1, 2])  # classes 'missile' twice; identical scores, label index 0 (classes.index)
    tokens = np.array([[-1.0, -1.0]], dtype=np.float32)
    arrays = {"token_logprobs": tokens, "class_offsets": offsets, "label_index": np.array([0])}
    top1 = np.argsort(np.array([[-1.0, -1.0]]), axis=-1)[:, -5:][:, ::-1][0, 0]
    assert score_loglik([{"status": "ok"}], arrays)["accuracy_sum"] == (100.0 if top1 == 0 else 0.0)


def test_the_cache_keyword_follows_the_models_signature(llava):
    """transformers 5.17's forward takes past_key_values and swallows an unknown cache= (a silent fresh cache);
    later 5.x releases take cache. The keyword is read from the signature, so both work."""
    from vlmrepro.models import cache_argument

    class Older(torch.nn.Module):  # the 5.17 signature
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            return past_key_values

    assert cache_argument(Older(), "kv") == {"past_key_values": "kv"}
    assert cache_argument(llava.model, "kv") == {"cache": "kv"}  # the installed release


def test_shards_gather_into_one_jobs_output(llava, tmp_path):
    """Probabilistic inference split into jobs of consecutive items (ImageNet: 50,000 images), gathered: the rows
    byte for byte and the arrays equal to one job's, whatever the shard count."""
    from types import SimpleNamespace

    from vlmrepro.evaluate import shard_slice
    from vlmrepro.io import write_jsonl
    from vlmrepro.jobs import gather_loglik

    rows = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((32, 32, 3), 30 * i, dtype=np.uint8)).save(path)
        rows.append({"row": i, "image": f"./x/{i}.png", "path": str(path), "label": CLASSES[i % 3], "split": "test"})
    queries = plan_queries(rows, CLASSES, "What type of object is in this photo?", 1234)
    args = (CLASSES, "USER: <image>\n{question}\nASSISTANT: The photo features a", "continuation",
            "What type of object is in this photo?", 4, "r")  # fmt: skip
    whole = run_loglik(llava, queries, *args, text_prior=True, log=lambda _: None)
    files = {"rows": [], "logprobs": [], "meta": []}
    for index in range(3):
        part = queries[shard_slice(len(queries), 1, index, 3)]
        records, arrays = run_loglik(llava, part, *args, text_prior=True, log=lambda _: None)
        for kind, path in (("rows", f"{index}.jsonl"), ("logprobs", f"{index}.npz"), ("meta", f"{index}.json")):
            files[kind].append(str(tmp_path / path))
        write_jsonl(files["rows"][-1], records)
        np.savez_compressed(files["logprobs"][-1], **arrays)
        (tmp_path / f"{index}.json").write_text(json.dumps({"model": "m", "seconds": 1.0, "shard": f"{index}-of-3"}))
    out = SimpleNamespace(rows=str(tmp_path / "all.jsonl"), logprobs=str(tmp_path / "all.npz"), meta=str(tmp_path / "all.json"))
    gather_loglik(SimpleNamespace(**files), out, [str(tmp_path / "gather.log")])
    write_jsonl(tmp_path / "whole.jsonl", whole[0])
    assert (tmp_path / "all.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    with np.load(out.logprobs) as gathered:
        assert set(gathered) == set(whole[1])
        for key, value in whole[1].items():
            assert np.array_equal(gathered[key], value), key
    assert json.loads((tmp_path / "all.json").read_text())["shards"] == 3


def loglik_queries(tmp_path, classes, n=2):
    rows = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((32, 32, 3), 60 * i, dtype=np.uint8)).save(path)
        rows.append({"row": i, "image": f"./data/x/{i}.png", "path": str(path), "label": classes[i], "split": "test"})
    return plan_queries(rows, classes, "What type of object is in this photo?", 1234)


@pytest.mark.parametrize("family, method, template", [
    ("llava", "continuation", "USER: <image>\n{question}\nASSISTANT: The photo features a"),
    ("blip2", "per_class", BLIP_TEMPLATE),
])  # fmt: skip
def test_a_class_name_past_the_context_is_context_overflow_never_truncated(tiny_models, tmp_path, family, method, template):
    """A 10,000-character class name cannot be scored on a 512-position model: every item is context_overflow,
    naming the class and the counts, the weights are never loaded, and the cell is N/A with that reason."""
    vlm = VisionLanguageModel(tiny_models / family, family, device="cpu")
    classes = [*CLASSES, "x" * 10_000]
    queries = loglik_queries(tmp_path, classes)
    records, arrays = run_loglik(vlm, queries, classes, template, method, "What type of object is in this photo?", 4,
                                 "r", text_prior=True, log=lambda _: None)  # fmt: skip
    assert {r["status"] for r in records} == {"context_overflow"}
    assert "class 'xxxx" in records[0]["reason"] and "more than the model's context of 512" in records[0]["reason"]
    assert vlm._model is None and np.isnan(arrays["token_logprobs"]).all() and np.isnan(arrays["prior"]).all()
    score = score_loglik(records, arrays)
    assert score["not_evaluated"] == {"context_overflow": 2} and "context_overflow" in score["na_reason"]


def test_image_tokens_that_push_a_class_past_the_context_are_found_per_item(tmp_path):
    """The text fits, the image's 16 tokens (its placeholder counted once in the text) do not: found from the
    processor's real lengths. One position more and every class fits."""
    from vlmrepro.demo.tiny import build_tiny

    template = "USER: <image>\n{question}\nASSISTANT: The photo features a"
    question = "What type of object is in this photo?"
    queries = loglik_queries(tmp_path, CLASSES)
    build_tiny("llava", tmp_path / "probe", {"tokenizer": "real"})
    probe = VisionLanguageModel(tmp_path / "probe", "llava", device="cpu")
    context = template.replace("{question}", question)
    fits = probe.prompt_token_lower_bounds([context])[0] + max(map(len, class_token_ids(probe.tokenizer, CLASSES))) + 15
    statuses = {}
    for limit in (fits - 1, fits):
        build_tiny("llava", tmp_path / str(limit), {"tokenizer": "real", "max_context": limit})
        vlm = VisionLanguageModel(tmp_path / str(limit), "llava", device="cpu")
        records, _ = run_loglik(vlm, queries, CLASSES, template, "continuation", question, 4, "r", log=lambda _: None)
        statuses[limit] = {r["status"] for r in records}
    assert statuses == {fits - 1: {"context_overflow"}, fits: {"ok"}}


def test_a_class_past_the_q_formers_positions_is_context_overflow_with_its_reason(tiny_models, tmp_path):
    """InstructBLIP's Q-Former reads the class-filled prompt too, through 512 positions of its own."""
    vlm = VisionLanguageModel(tiny_models / "instructblip", "instructblip", device="cpu")
    classes = [*CLASSES, " ".join(["cat"] * 600)]
    queries = loglik_queries(tmp_path, classes)
    records, _ = run_loglik(vlm, queries, classes, BLIP_TEMPLATE, "per_class", "What?", 4, "r", log=lambda _: None)
    assert {r["status"] for r in records} == {"context_overflow"}
    assert "Q-Former tokens, more than the Q-Former's 512 positions" in records[0]["reason"]
