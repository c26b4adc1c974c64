import time

from vlmrepro.backends import load_generator
from vlmrepro.cache import shard_cache
from vlmrepro.evaluate import run_generation, shard_slice
from vlmrepro.io import read_jsonl, write_json, write_jsonl
from vlmrepro.memory import resolve_batch_size
from vlmrepro.prompts import render
from vlmrepro.records import shard_meta
from vlmrepro.smk import running_job

with running_job(snakemake):
    run = snakemake.params.run
    start = time.time()
    queries = read_jsonl(snakemake.input.queries)
    index, count = snakemake.params.shard
    # shards are whole blocks, and a block's batches do not depend on the shard count
    part = shard_slice(len(queries), run["sort_block"], index, count)
    vlm, revision = load_generator(snakemake.input.model, run)
    batch_size = resolve_batch_size(
        vlm, run, [render(vlm.template, q["question"]) for q in queries[part]], [q["path"] for q in queries[part]]
    )
    print(f"batch size {batch_size} (configured: {run['batch_size']}), batching {run['batching']}")
    if run["batching"] == "fast" and getattr(vlm, "checkpoint_padding_side", None) == "right":
        print(
            f"warning: {run['model']}'s checkpoint pads on the right, as upstream ran it; with left padding its "
            "answers may differ from upstream's (batching: upstream reproduces them)"
        )
    records = run_generation(
        vlm,
        queries[part],
        vlm.template,
        run["answer_marker"],
        run["max_new_tokens"],
        batch_size,
        revision,
        cache=shard_cache(snakemake.params.cache),
        cache_context={**run, **vlm.generation_settings(), "model_revision": revision},
        sort_block=max(run["sort_block"], batch_size),  # vLLM takes the whole shard in one call
        loader_workers=run["loader_workers"],
        answer_from=run["answer_from"],
        min_new_tokens=run["min_new_tokens"],
        reasoning_tags=run.get("reasoning_tags"),
    )
    write_jsonl(snakemake.output.rows, records)
    seconds = time.time() - start
    meta = shard_meta(
        run, vlm.generation_settings(), revision, (index, count), part, seconds, batch_size_used=batch_size
    )
    write_json(snakemake.output.meta, meta)
