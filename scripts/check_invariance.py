from vlmrepro.backends import load_generator
from vlmrepro.io import read_jsonl, write_json
from vlmrepro.robustness import check_invariance
from vlmrepro.smk import running_job

with running_job(snakemake):
    run = snakemake.params.run
    vlm, revision = load_generator(snakemake.input.model, run)
    result = check_invariance(
        vlm,
        read_jsonl(snakemake.input.queries),
        read_jsonl(snakemake.input.outputs),
        run,
        revision,
        snakemake.params.subset,
        snakemake.params.work_dir,
    )
    write_json(snakemake.output[0], result)
    print({k: v for k, v in result.items() if not k.endswith("differences")})
