# Reproduction of Zhang et al., NeurIPS 2024: "Why are Visually-Grounded Language Models Bad at Image
# Classification?". Data flows one way: manifests -> query plans -> model outputs -> scores -> tables -> report.
import os
import sys

# The vlmrepro package lives beside this file. Jobs import it through the scripts/vlmrepro link (Snakemake puts a
# script's folder on sys.path), so it needs no installation in conda or cluster environments.
sys.path.insert(0, workflow.basedir)


from vlmrepro import cluster, config_snapshot, runs

# config.yaml is the full paper. A config given with --configfile (the demo, your own run) replaces it whole instead
# of being merged into it, so no paper model or dataset leaks into another configuration. A site config, which holds
# only `cluster` and `resources` (README "Cluster (SLURM)"), is layered over the run's config instead.
if runs.layered_on_the_paper(workflow.overwrite_configfiles):

    configfile: str(runs.PAPER_CONFIG)


# Every job of a run sees the configuration the run started with, whatever happens to the files meanwhile.
config_snapshot.pin_to_run_start(workflow, config)


include: "rules/common.smk"


# The SLURM executor reads its partition limits from this variable; set here, the path is the workflow's own, which
# --directory does not move, and a site config may point it elsewhere.
os.environ[cluster.PARTITIONS_VARIABLE] = str(cluster.partitions_file(config, workflow.basedir))
cluster.read_cancelled_jobs_as_failed()


wildcard_constraints:
    dataset=one_of(DATASETS),
    setting=one_of(SETTINGS),
    split="[A-Za-z0-9_-]+",
    table=one_of(TABLES),


include: "rules/datasets.smk"
include: "rules/models.smk"
include: "rules/evaluate.smk"
include: "rules/external.smk"
include: "rules/frequency.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report/index.html",
