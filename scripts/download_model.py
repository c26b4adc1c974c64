from vlmrepro.hub import download_snapshot
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    hub = snakemake.params.hub
    commit = download_snapshot(hub["repo"], hub["revision"], snakemake.output[0])
    print(f"{hub['repo']}@{hub['revision']} resolved to {commit}")
