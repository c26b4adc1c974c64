import numpy as np

from vlmrepro.io import read_jsonl, write_json
from vlmrepro.scoring import score_loglik
from vlmrepro.smk import job_logging

with job_logging(snakemake):
    params = snakemake.params.scoring
    with np.load(snakemake.input.logprobs) as npz:
        arrays = dict(npz)
    result = score_loglik(
        read_jsonl(snakemake.input.rows),
        arrays,
        alphas=params["alphas"],
        text_prior_alphas=params["alphas"] if params["text_prior"] else None,
    )
    write_json(snakemake.output[0], result)
    print(result)
