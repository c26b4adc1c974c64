from vlmrepro.hub import link_local_checkpoint
from vlmrepro.smk import running_job

with running_job(snakemake):
    revision = link_local_checkpoint(snakemake.params.source, snakemake.output[0])
    print(f"{snakemake.params.source} linked as {snakemake.output[0]} ({revision})")
