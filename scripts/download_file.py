from vlmrepro.download import fetch, file_digest
from vlmrepro.smk import running_job

with running_job(snakemake):
    source = snakemake.params.source
    fetch(source["url"], snakemake.output[0], source["checksum"])
    checked = f"{source['checksum']} verified" if source["checksum"] else "no checksum configured: pinned by its URL"
    print(f"{source['url']} -> {snakemake.output[0]} ({checked}; sha256:{file_digest(snakemake.output[0], 'sha256')})")
