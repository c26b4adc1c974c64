from vlmrepro.hub import download_snapshot, revision_name
from vlmrepro.smk import running_job

with running_job(snakemake):
    hub = snakemake.params.hub
    commit = download_snapshot(hub["repo"], hub["revision"], snakemake.output[0])
    print(f"{hub['repo']}@{revision_name(hub['revision'])} resolved to {commit}")
