import time

from vlmrepro.api import ApiModel, record_retry_state, retry_state_path, run_api_generation
from vlmrepro.io import read_jsonl, write_json, write_jsonl
from vlmrepro.smk import running_job

with running_job(snakemake):
    run = snakemake.params.run
    start = time.time()
    queries = read_jsonl(snakemake.input.queries)
    if run["data_limit"] is not None:  # upstream's --data_limit: the first N items of the seeded order
        queries = queries[: run["data_limit"]]
    model = ApiModel(run["provider"], run["model"], base_url=run.get("base_url"), max_tokens=run.get("max_tokens"))
    records = run_api_generation(
        model,
        queries,
        run["template"],
        snakemake.params.cache,
        concurrency=run["concurrency"],
        max_attempts=run["max_attempts"],
        calls_per_item=run["calls_per_item"],
        revision=run["model"],
    )
    write_jsonl(snakemake.output.rows, records)
    reported = sorted({r["model_reported"] for r in records if r.get("model_reported")})
    write_json(
        snakemake.output.meta,
        {**run, "models_reported": reported, "seconds": round(time.time() - start, 2)},
    )
    # read by the next plan: api_error items make the job run again (vlmrepro.api.retry_token)
    state = retry_state_path(snakemake.wildcards.model, snakemake.wildcards.dataset, snakemake.wildcards.setting)
    record_retry_state(state, records, snakemake.params.retry)
