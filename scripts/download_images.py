from pathlib import Path

from vlmrepro.download import extract_archive, fetch
from vlmrepro.io import atomic_dir
from vlmrepro.smk import running_job

with running_job(snakemake):
    archive = snakemake.params.archive
    out = Path(snakemake.output[0])
    with atomic_dir(out) as work:  # renamed onto the output only when complete
        work.mkdir(parents=True)
        local = work / Path(archive["url"].split("?")[0]).name
        fetch(archive["url"], local, archive["checksum"])
        extract_archive(local, work)
        local.unlink()
        if archive.get("inner"):
            inner = work / archive["inner"]
            extract_archive(inner, work)
            inner.unlink()
    print(f"{archive['url']} unpacked into {out}")
