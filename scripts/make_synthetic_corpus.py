from vlmrepro.datasets import load_class_list
from vlmrepro.frequency import synthetic_corpus
from vlmrepro.io import write_json
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    classes = sorted({name for path in snakemake.input.classes for name in load_class_list(path)})
    spec = snakemake.params.spec
    write_json(snakemake.output[0], synthetic_corpus(classes, spec["n_records"], spec["zipf"], spec["seed"]))
