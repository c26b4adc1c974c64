import time

import numpy as np

from vlmrepro.cache import shard_cache
from vlmrepro.datasets import load_class_list
from vlmrepro.evaluate import shard_slice
from vlmrepro.io import atomic_path, read_jsonl, write_json, write_jsonl
from vlmrepro.loglik import run_loglik
from vlmrepro.models import VisionLanguageModel
from vlmrepro.records import shard_meta
from vlmrepro.smk import running_job

with running_job(snakemake):
    run = snakemake.params.run
    start = time.time()
    queries = read_jsonl(snakemake.input.queries)
    index, count = snakemake.params.shard
    part = shard_slice(len(queries), 1, index, count)  # each item is scored alone: any split gives the same scores
    vlm, revision = VisionLanguageModel.for_job(snakemake.input.model, run)
    records, arrays = run_loglik(
        vlm,
        queries[part],
        load_class_list(snakemake.input.classes),
        vlm.template,
        run["method"],
        run["question"],
        run["chunk"],
        revision,
        text_prior=run["text_prior"],
        cache=shard_cache(snakemake.params.cache),  # each scored item, written ahead
        cache_context={**run, **vlm.generation_settings(), "model_revision": revision},
    )
    with atomic_path(snakemake.output.logprobs) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    write_jsonl(snakemake.output.rows, records)
    write_json(
        snakemake.output.meta,
        shard_meta(run, vlm.generation_settings(), revision, (index, count), part, time.time() - start),
    )
