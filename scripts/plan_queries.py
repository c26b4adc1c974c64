from vlmrepro.datasets import load_class_list
from vlmrepro.io import read_jsonl, write_jsonl
from vlmrepro.queries import plan_queries
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    plan = snakemake.params.plan
    queries = plan_queries(
        read_jsonl(snakemake.input.rows),
        load_class_list(snakemake.input.classes),
        plan["question"],
        plan["seed"],
        candidates=plan["candidates"],
        order=plan["order"],
        limit=plan["limit"],
        shuffle=plan["shuffle"],
    )
    write_jsonl(snakemake.output[0], queries)
    print(f"{len(queries)} queries")
