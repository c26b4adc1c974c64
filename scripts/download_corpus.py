from vlmrepro.hub import download_dataset_file
from vlmrepro.smk import running_job

with running_job(snakemake):
    hub = snakemake.params.hub
    commit = download_dataset_file(hub["repo"], hub["file"], hub["revision"], snakemake.output[0])
    print(f"{hub['repo']}/{hub['file']}@{hub['revision']} resolved to {commit}")
