import json

from vlmrepro.demo.train import train_world_model
from vlmrepro.io import atomic_dir, write_json
from vlmrepro.smk import running_job

with running_job(snakemake, threads=snakemake.params.threads):
    with atomic_dir(snakemake.output.model) as work:
        log = train_world_model(snakemake.params.train, dict(snakemake.input.items()), work)
    write_json(snakemake.output.log, log)
    print(json.dumps({k: v for k, v in log.items() if k != "losses"}))
