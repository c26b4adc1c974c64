from vlmrepro.datasets import duplicate_classes, load_class_list
from vlmrepro.io import write_json
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    classes = load_class_list(snakemake.input[0])
    for name, indices in duplicate_classes(classes).items():
        # ImageNet lists 'missile' and 'sunglasses' twice; kept, as upstream does (PROTOCOL §3.5)
        print(f"duplicate class name {name!r} at indices {indices}")
    write_json(snakemake.output[0], classes)
