import json
import os
import subprocess
import sys
from pathlib import Path

from vlmrepro.finetune import blip_caption_label, run
from vlmrepro.io import read_jsonl, write_json
from vlmrepro.models import read_revision
from vlmrepro.smk import running_job

with running_job(snakemake, threads=snakemake.params.threads):
    params = snakemake.params.job
    if "mix" in snakemake.input.keys():  # an instruction mix built by its own rule
        examples = read_jsonl(snakemake.input.mix)
    elif "captions" in snakemake.input.keys():  # one caption per training image, written by a captioning model
        rows = read_jsonl(snakemake.input.captions)
        paths = {q["item"]: q["path"] for q in read_jsonl(snakemake.input.queries)}
        examples = [
            {"path": paths[r["item"]], "segments": [[params["prompt"], r["pred"]]]} for r in rows if r["status"] == "ok"
        ]
        print(f"{len(examples)} captions ({len(rows) - len(examples)} training images without one)")
    else:
        answer = blip_caption_label if params["answer"] == "blip_caption" else (lambda label: label)
        examples = [
            {"path": q["path"], "segments": [[params["prompt"], answer(q["label"])]]}
            for q in read_jsonl(snakemake.input.queries)
        ]
    if params["epoch_eval"]:  # the evaluation after every epoch reads its planned queries
        params = {**params, "epoch_eval": {**params["epoch_eval"], "queries": snakemake.input.eval_queries}}
    job = {
        **params,
        "family": snakemake.params.family,
        "device": snakemake.params.device,
        "base_dir": snakemake.input.base,
        "base_revision": read_revision(snakemake.input.base),
        # the plain language model LoRA adapters are merged onto (upstream: lmsys/vicuna-7b-v1.5), if any
        "merge_base_dir": snakemake.input.get("merge_base"),
        "examples": examples,
        "checkpoint_dir": snakemake.params.checkpoints,
        "out_dir": snakemake.output.model,
        "log_file": snakemake.output.losses,
        "workers": snakemake.threads,
    }
    gpus = snakemake.resources.get("gpu", 0)  # absent for a CPU run
    if gpus > 1:  # data parallel over the job's GPUs; checkpoints make a rerun resume
        job_file = Path(snakemake.params.checkpoints) / "job.json"
        job_file.parent.mkdir(parents=True, exist_ok=True)
        job_file.write_text(json.dumps(job))
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([snakemake.scriptdir, os.environ.get("PYTHONPATH", "")])}
        subprocess.run([*launch, "-m", "vlmrepro.finetune", str(job_file)], check=True, env=env, stdout=sys.stdout, stderr=sys.stderr)
    else:
        write_json(snakemake.output.losses, run(job))
