import time

import numpy as np

from vlmrepro.cache import WriteAheadCache
from vlmrepro.datasets import load_class_list
from vlmrepro.io import atomic_path, read_jsonl, write_json, write_jsonl
from vlmrepro.loglik import run_loglik
from vlmrepro.models import VisionLanguageModel
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    run = snakemake.params.run
    start = time.time()
    vlm, revision = VisionLanguageModel.for_job(snakemake.input.model, run)
    records, arrays = run_loglik(
        vlm,
        read_jsonl(snakemake.input.queries),
        load_class_list(snakemake.input.classes),
        run["template"],
        run["method"],
        run["question"],
        run["chunk"],
        revision,
        text_prior=run["text_prior"],
        # each scored item, written ahead: a killed job's rerun scores only the unfinished items
        cache=WriteAheadCache(snakemake.params.cache),
        cache_context={**run, **vlm.generation_settings(), "model_revision": revision},
    )
    with atomic_path(snakemake.output.logprobs) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    write_jsonl(snakemake.output.rows, records)
    write_json(
        snakemake.output.meta,
        {**run, **vlm.generation_settings(), "model_revision": revision, "seconds": round(time.time() - start, 2)},
    )
