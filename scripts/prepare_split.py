from vlmrepro.datasets import prepare_split
from vlmrepro.io import write_json, write_jsonl
from vlmrepro.smk import running_job

with running_job(snakemake):
    rows, report = prepare_split(
        snakemake.input.manifest,
        snakemake.input.classes,
        snakemake.wildcards.split,
        snakemake.params.prefix,
        snakemake.params.image_root,
        on_bad_image=snakemake.params.on_bad_image,
        workers=2 * snakemake.threads,
    )
    write_jsonl(snakemake.output.rows, rows)
    write_json(snakemake.output.report, report)
    print(f"{report['n_rows']} rows, {report['n_skipped']} skipped")
