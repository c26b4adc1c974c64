from vlmrepro.datasets import make_synthetic_dataset
from vlmrepro.io import write_json, write_jsonl
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    spec = snakemake.params.spec
    out_dir = snakemake.output.images.rsplit("/", 1)[0]
    rows, classes = make_synthetic_dataset(
        out_dir,
        snakemake.wildcards.dataset,
        spec["n_classes"],
        spec["train_per_class"],
        spec["test_per_class"],
        spec["image_size"],
        spec["seed"],
    )
    write_json(snakemake.output.classes, classes)
    write_jsonl(snakemake.output.manifest, rows)
    print(f"{len(rows)} images of {len(classes)} classes")
