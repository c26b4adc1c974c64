from vlmrepro.demo.world import build_world_outputs
from vlmrepro.smk import running_job

with running_job(snakemake):
    output = snakemake.output
    index = build_world_outputs(output.images, output.files, snakemake.params.spec, name=snakemake.wildcards.world)
    print({k: v for k, v in index.items() if k not in ("root", "images")})
