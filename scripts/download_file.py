from vlmrepro.download import fetch, file_digest
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    source = snakemake.params.source
    fetch(source["url"], snakemake.output[0], source["checksum"])
    checked = f"{source['checksum']} verified" if source["checksum"] else "no checksum configured: pinned by its URL"
    print(f"{source['url']} -> {snakemake.output[0]} ({checked}; sha256:{file_digest(snakemake.output[0], 'sha256')})")
