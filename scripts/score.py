from vlmrepro.io import read_jsonl, write_json
from vlmrepro.scoring import score_outputs
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    result = score_outputs(read_jsonl(snakemake.input[0]), resplit_marker=snakemake.params.resplit)
    write_json(snakemake.output[0], result)
    print(result)
