# Reproduction of Zhang et al., NeurIPS 2024: "Why are Visually-Grounded Language Models Bad at Image
# Classification?". Data flows one way: manifests -> query plans -> model outputs -> scores -> tables -> report.
import os
import sys

# the vlmrepro package lives beside this file; jobs (local, conda or cluster) import it from here
sys.path.insert(0, workflow.basedir)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p
)


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/models.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        "results/report/index.html",
    default_target: True
