import os
import shutil

from vlmrepro.smk import job_logging
from vlmrepro.tiny import build_tiny

with job_logging(snakemake):
    out = snakemake.output[0]
    work = out + ".part"
    shutil.rmtree(work, ignore_errors=True)
    build_tiny(snakemake.params.family, work, snakemake.params.spec)
    os.replace(work, out)
    print(f"tiny {snakemake.params.family} model saved to {out}")
