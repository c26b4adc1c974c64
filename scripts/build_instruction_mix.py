from vlmrepro.instruction_mix import build_mix
from vlmrepro.io import read_json, read_jsonl, write_json, write_jsonl
from vlmrepro.smk import running_job

with running_job(snakemake):
    mix = snakemake.params.mix
    examples, report = build_mix(
        read_jsonl(snakemake.input.queries),
        read_json(snakemake.input.corpus),
        mix["image_roots"],
        snakemake.params.prompt,
        mix["system"],
        mix["seed"],
        mix["classification_copies"],
    )
    write_jsonl(snakemake.output.mix, examples)
    write_json(snakemake.output.report, report)
    print(report)
