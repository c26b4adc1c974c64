from vlmrepro.io import write_text
from vlmrepro.report import index_html
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    write_text(snakemake.output[0], index_html(list(snakemake.input.pages), list(snakemake.input.tables)))
