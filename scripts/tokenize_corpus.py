import json

from vlmrepro.frequency import corpus_sentences, write_token_file
from vlmrepro.io import atomic_path
from vlmrepro.smk import running_job

with running_job(snakemake):
    with open(snakemake.input[0], encoding="utf-8") as handle:
        records = json.load(handle)
    with atomic_path(snakemake.output[0]) as tmp:
        n = write_token_file(tmp, corpus_sentences(records, snakemake.params.unit, snakemake.params.lowercase))
    print(f"{len(records)} records, {n} sentences")
