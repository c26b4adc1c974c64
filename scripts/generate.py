import time
from pathlib import Path

from vlmrepro.cache import WriteAheadCache
from vlmrepro.evaluate import run_generation, shard_slice
from vlmrepro.io import read_jsonl, write_json, write_jsonl
from vlmrepro.models import VisionLanguageModel
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    run = snakemake.params.run
    start = time.time()
    queries = read_jsonl(snakemake.input.queries)
    index, count = snakemake.params.shard
    part = shard_slice(len(queries), run["batch_size"], index, count)
    vlm, revision = VisionLanguageModel.for_job(snakemake.input.model, run)
    cache_file = Path(snakemake.params.cache)
    # entries written under another shard count are reused: keys do not depend on the sharding
    cache = WriteAheadCache(cache_file, also_read=sorted(cache_file.parent.glob("*.jsonl")))
    records = run_generation(
        vlm,
        queries[part],
        run["template"],
        run["answer_marker"],
        run["max_new_tokens"],
        run["batch_size"],
        revision,
        cache=cache,
        cache_context={**run, **vlm.generation_settings(), "model_revision": revision},
    )
    write_jsonl(snakemake.output.rows, records)
    write_json(
        snakemake.output.meta,
        {
            **run,
            **vlm.generation_settings(),
            "model_revision": revision,
            "shard": f"{index}-of-{count}",
            "items": [part.start, part.stop],
            "seconds": round(time.time() - start, 2),
        },
    )
