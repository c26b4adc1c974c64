import os
import shutil
from pathlib import Path

from vlmrepro.download import extract_archive, fetch
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    archive = snakemake.params.archive
    out = Path(snakemake.output[0])
    work = out.with_name(out.name + ".part")  # renamed onto the output only when complete
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    local = work / Path(archive["url"].split("?")[0]).name
    fetch(archive["url"], local, archive["checksum"])
    extract_archive(local, work)
    local.unlink()
    if archive.get("inner"):
        inner = work / archive["inner"]
        extract_archive(inner, work)
        inner.unlink()
    shutil.rmtree(out, ignore_errors=True)
    os.replace(work, out)
    print(f"{archive['url']} unpacked into {out}")
