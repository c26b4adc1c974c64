from vlmrepro.datasets import build_imagenet_manifest, load_class_list
from vlmrepro.io import write_jsonl
from vlmrepro.smk import running_job

with running_job(snakemake):
    classes = load_class_list(snakemake.input.classes)
    rows = build_imagenet_manifest(
        snakemake.params.directory, classes, splits=snakemake.params.splits, devkit_dir=snakemake.params.devkit
    )
    write_jsonl(snakemake.output[0], rows)
    print(f"{len(rows)} rows from {snakemake.params.directory}")
