from vlmrepro.hub import download_snapshot
from vlmrepro.smk import running_job

with running_job(snakemake):
    hub = snakemake.params.hub
    commit = download_snapshot(hub["repo"], hub["revision"], snakemake.output[0])
    print(f"{hub['repo']}@{hub['revision']} resolved to {commit}")
