from vlmrepro.download import fetch
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    source = snakemake.params.source
    fetch(source["url"], snakemake.output[0], source["checksum"])
    print(f"{source['url']} -> {snakemake.output[0]} ({source['checksum']} verified)")
