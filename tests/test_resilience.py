"""Scale-out and resilience of generation: shards of whole batches gathered byte-identically, and a write-ahead
cache so that a job killed at any point (SIGKILL) recomputes only what was unfinished."""

import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import BIN, REPO, snakemake
from vlmrepro.cache import WriteAheadCache
from vlmrepro.evaluate import run_generation, shard_slice
from vlmrepro.models import VisionLanguageModel

TEMPLATE = "USER: <image>\n{question}\nASSISTANT:"


@pytest.mark.parametrize("n, batch", [(48, 8), (50, 8), (7, 3), (1, 4)])
def test_shards_are_whole_batches_covering_every_item_once(n, batch):
    for count in (1, 2, 3, 7):
        parts = [shard_slice(n, batch, i, count) for i in range(count)]
        assert [i for p in parts for i in range(p.start, p.stop)] == list(range(n))
        assert all(p.start % batch == 0 for p in parts)


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = []
    for i in range(20):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        question = "What is this?" if i % 3 else "What type of object is in this photo? Answer in a few words."
        out.append({"item": i, "row": i, "image": path.name, "path": str(path), "label": "x", "question": question})
    out[5]["skip"] = "missing"
    return out


def test_sharded_generation_equals_one_job_and_cache_resumes(tiny_models, queries, tmp_path):
    vlm = VisionLanguageModel(tiny_models / "llava", "llava", "float32", "cpu")
    whole = run_generation(vlm, queries, TEMPLATE, "ASSISTANT:", 12, 4, "r", log=lambda s: None)
    sharded = []
    for i in range(3):
        part = shard_slice(len(queries), 4, i, 3)
        sharded += run_generation(vlm, queries[part], TEMPLATE, "ASSISTANT:", 12, 4, "r", log=lambda s: None)
    assert json.dumps(sharded) == json.dumps(whole)

    # a job killed after two batches: its rerun takes them from the cache and computes the rest only
    cache, context = WriteAheadCache(tmp_path / "c.jsonl"), {"model": "tiny", "max_new_tokens": 12}
    run_generation(vlm, queries[:8], TEMPLATE, "ASSISTANT:", 12, 4, "r", log=lambda s: None, cache=cache, cache_context=context)
    logs = []
    resumed = run_generation(
        vlm, queries, TEMPLATE, "ASSISTANT:", 12, 4, "r", log=logs.append,
        cache=WriteAheadCache(tmp_path / "c.jsonl"), cache_context=context,
    )  # fmt: skip
    assert json.dumps(resumed) == json.dumps(whole)
    assert logs[0].startswith("12 of 20 items to generate (7 from the cache")  # item 5 is skipped, never cached
    # other settings never reuse the entries
    logs = []
    run_generation(vlm, queries[:8], TEMPLATE, "ASSISTANT:", 12, 4, "r", log=logs.append,
                   cache=WriteAheadCache(tmp_path / "c.jsonl"), cache_context={**context, "max_new_tokens": 13})
    assert "(0 from the cache" in logs[0]


# --- the workflow: shard count invariance and SIGKILL at random points -----------------------------------------

TARGET = "results/outputs/tiny-llava/shapes12/open_world.jsonl"


def small_config(tmp_path, shards=1, name="config.yaml"):
    config = yaml.safe_load((REPO / "demo" / "config.yaml").read_text())
    # 4 classes of the demo world: 32 test images, 4 batches of 8
    world = {"name": "shapes", "n_classes": 4}
    config["datasets"] = {"shapes12": {**config["datasets"]["shapes12"], "shards": shards, "world": world}}
    # random weights: these tests are about jobs, not accuracy (the trained demo LLaVA takes minutes to train)
    llava = {k: v for k, v in config["models"]["tiny-llava"].items() if k != "train"}
    config["models"] = {"tiny-llava": {**llava, "tiny": {"seed": 0, "max_context": 256}, "batch_size": 8}}
    config["settings"] = {"open_world": {**config["settings"]["open_world"], "max_new_tokens": 48}}
    config.update(finetunes={}, corpora={})
    config["report"]["findings"] = []
    config["tables"] = {
        "table1": {
            "paper_table": "Table 1",
            "groups": [{"models": ["tiny-llava"], "datasets": ["shapes12"], "columns": [{"setting": "open_world", "paper": "open-world"}]}],
        }
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A workdir with the tiny model built and the queries planned, and the output of one uninterrupted job."""
    root = tmp_path_factory.mktemp("resilience")
    work = root / "base"
    config = small_config(root)
    snakemake("--configfile", config, "--cores", "2", "results/queries/shapes12/open_world.jsonl", "models/tiny-llava", workdir=work)
    reference = root / "reference"
    shutil.copytree(work, reference)
    snakemake("--configfile", config, "--cores", "2", TARGET, workdir=reference)
    return root, work, (reference / TARGET).read_bytes()


@pytest.mark.slow
def test_gathered_outputs_are_byte_identical_whatever_the_shard_count(prepared, tmp_path):
    root, work, reference = prepared
    shards = 5  # of 4 batches: one shard has nothing to do
    copy_dir = tmp_path / f"shards{shards}"
    shutil.copytree(work, copy_dir)
    config = small_config(tmp_path, shards, f"config{shards}.yaml")
    proc = snakemake("--configfile", config, "--cores", "2", TARGET, workdir=copy_dir)
    assert proc.output.count("rule generate:") == shards
    assert (copy_dir / TARGET).read_bytes() == reference


def cache_lines(folder):
    return sum(1 for f in folder.glob("*.jsonl") for line in f.read_bytes().split(b"\n") if line.endswith(b"}"))


@pytest.mark.parametrize("seed", [2])  # one random kill point per run: the suite has a time budget
@pytest.mark.slow
def test_a_job_killed_at_a_random_point_resumes_to_identical_outputs(prepared, tmp_path, seed):
    root, work, reference = prepared
    run_dir = tmp_path / "run"
    shutil.copytree(work, run_dir)
    config = small_config(tmp_path)
    cache_dir = run_dir / "results/cache/generate/tiny-llava/shapes12/open_world"
    n_items = 32
    kill_after = random.Random(seed).randint(1, n_items - 9)  # items finished before the kill, at least
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HOME": str(run_dir / ".hf")}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(run_dir), "--force-use-threads", "--configfile", config, "--cores", "1", TARGET]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while cache_lines(cache_dir) < kill_after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = cache_lines(cache_dir)
    assert 0 < finished < n_items and not (run_dir / TARGET).exists()  # killed mid-job, nothing taken as done

    snakemake(TARGET, "--unlock", "--configfile", config, workdir=run_dir)
    snakemake("--configfile", config, "--cores", "1", TARGET, workdir=run_dir)
    assert (run_dir / TARGET).read_bytes() == reference
    log = (run_dir / "logs/generate/tiny-llava/shapes12/open_world/0-of-1.log").read_text()
    assert f"{n_items - finished} of {n_items} items to generate ({finished} from the cache" in log


# --- caches never serve answers computed on other images ------------------------------------------------------


def test_images_swapped_under_the_same_names_reuse_no_cached_answer(tiny_models, tmp_path):
    """Images replaced under the same file names (``images.directory`` pointed at another copy): their split rows
    carry other content hashes, so neither the generation, the log-likelihood nor the feature cache serves an entry
    computed on the old images, and the rerun equals a fresh run on the new ones."""
    from vlmrepro import features
    from vlmrepro.datasets import prepare_split
    from vlmrepro.loglik import run_loglik
    from vlmrepro.queries import plan_queries

    classes = ["cat", "dog"]
    manifest, classes_file = tmp_path / "m.jsonl", tmp_path / "classes.json"
    rows = [{"image": f"./data/Toy/{i}.png", "label": classes[i % 2], "split": "test"} for i in range(8)]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    classes_file.write_text(json.dumps(classes))
    planned = {}
    for copy_seed, name in [(0, "old"), (1, "new")]:
        rng = np.random.default_rng(copy_seed)
        (tmp_path / name).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
        rows, _ = prepare_split(manifest, classes_file, "test", "./data/Toy/", tmp_path / name, workers=2)
        planned[name] = plan_queries(rows, classes, "What is this?", seed=0)
    assert [q["image"] for q in planned["old"]] == [q["image"] for q in planned["new"]]
    assert all(a["sha256"] != b["sha256"] for a, b in zip(planned["old"], planned["new"]))

    vlm = VisionLanguageModel(tiny_models / "llava", "llava", "float32", "cpu")
    context = {"model": "tiny"}

    def generate(queries, cache=None, logs=None):
        log = (logs if logs is not None else []).append
        return run_generation(vlm, queries, TEMPLATE, "ASSISTANT:", 12, 4, "r", log=log, cache=cache,
                              cache_context=context)  # fmt: skip

    generate(planned["old"], WriteAheadCache(tmp_path / "gen.jsonl"))
    logs = []
    rerun = generate(planned["new"], WriteAheadCache(tmp_path / "gen.jsonl"), logs)
    assert "(0 from the cache" in logs[0]
    assert json.dumps(rerun) == json.dumps(generate(planned["new"]))

    def loglik(queries, logs):
        run_loglik(vlm, queries, classes, TEMPLATE, "continuation", "What is this?", 4, "r", log=logs.append,
                   cache=WriteAheadCache(tmp_path / "loglik.jsonl"), cache_context=context)  # fmt: skip

    loglik(planned["old"], [])
    logs = []
    loglik(planned["new"], logs)
    assert "(0 from the cache" in logs[-1]

    def encode(images):  # mean colour: a feature of the image's content
        return np.stack([np.asarray(image, np.float32).mean((0, 1)) for image in images]), None, None

    for name in ("old", "new"):
        logs = []
        features.extract(encode, planned[name], classes, ["embedding"], tmp_path / f"f-{name}", 4, 8,
                         log=logs.append, cache_dir=tmp_path / "wal", cache_context=context)  # fmt: skip
        assert not any("from the cache" in line for line in logs)


def test_a_full_disk_while_appending_to_a_cache_names_the_cache_file(tmp_path, monkeypatch):
    import errno

    from vlmrepro.cache import ArrayLog

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    for cache, append in [
        (WriteAheadCache(tmp_path / "gen.jsonl"), lambda c: c.put("k", "v")),
        (ArrayLog(tmp_path / "features.bin", ("item",)), lambda c: c.append({"item": np.arange(3)})),
    ]:
        with pytest.raises(OSError) as info:
            append(cache)
        assert info.value.errno == errno.ENOSPC and str(cache.path) in str(info.value)
