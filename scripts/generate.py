import time

from vlmrepro.evaluate import run_generation
from vlmrepro.io import read_jsonl, write_json, write_jsonl
from vlmrepro.models import VisionLanguageModel
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    run = snakemake.params.run
    start = time.time()
    vlm, revision = VisionLanguageModel.for_job(snakemake.input.model, run)
    records = run_generation(
        vlm,
        read_jsonl(snakemake.input.queries),
        run["template"],
        run["answer_marker"],
        run["max_new_tokens"],
        run["batch_size"],
        revision,
    )
    write_jsonl(snakemake.output.rows, records)
    write_json(
        snakemake.output.meta,
        {**run, **vlm.generation_settings(), "model_revision": revision, "seconds": round(time.time() - start, 2)},
    )
