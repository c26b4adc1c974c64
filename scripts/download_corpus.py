from vlmrepro.hub import download_dataset_file
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    hub = snakemake.params.hub
    commit = download_dataset_file(hub["repo"], hub["file"], hub["revision"], snakemake.output[0])
    print(f"{hub['repo']}/{hub['file']}@{hub['revision']} resolved to {commit}")
