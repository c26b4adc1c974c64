from vlmrepro.datasets import load_class_list
from vlmrepro.frequency import count_classes, read_token_file
from vlmrepro.io import write_json
from vlmrepro.smk import running_job

with running_job(snakemake):
    counts = count_classes(read_token_file(snakemake.input.tokens), load_class_list(snakemake.input.classes))
    write_json(snakemake.output[0], counts)
    print(f"{len(counts)} classes found; top: {counts[:5]}")
