from vlmrepro.download import write_content_revision
from vlmrepro.io import atomic_dir
from vlmrepro.smk import running_job
from vlmrepro.demo.tiny import build_tiny

with running_job(snakemake):
    out = snakemake.output[0]
    with atomic_dir(out) as work:
        build_tiny(snakemake.params.family, work, snakemake.params.spec)
        write_content_revision(work, "tiny")
    print(f"tiny {snakemake.params.family} model saved to {out}")
