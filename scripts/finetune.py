from vlmrepro.finetune import finetune_job, launch
from vlmrepro.smk import running_job

with running_job(snakemake, threads=snakemake.params.threads):
    job = finetune_job(
        snakemake.params.job,
        dict(snakemake.input.items()),
        family=snakemake.params.family,
        device=snakemake.params.device,
        checkpoint_dir=snakemake.params.checkpoints,
        out_dir=snakemake.output.model,
        log_file=snakemake.output.losses,
        workers=snakemake.threads,
    )
    # the gpu resource is absent for a CPU run
    launch(job, gpus=snakemake.resources.get("gpu", 0), import_root=snakemake.scriptdir)
