from pathlib import Path

from vlmrepro.download import download_and_extract
from vlmrepro.io import atomic_dir
from vlmrepro.smk import running_job

with running_job(snakemake):
    archive = snakemake.params.archive
    out = Path(snakemake.output[0])
    with atomic_dir(out) as work:  # renamed onto the output only when complete
        download_and_extract(archive["url"], archive["checksum"], work, inner=archive.get("inner"))
    print(f"{archive['url']} unpacked into {out}")
