import time

from vlmrepro.backends import read_revision
from vlmrepro.datasets import load_class_list
from vlmrepro.evaluate import run_clip_zero_shot
from vlmrepro.io import read_jsonl, write_json, write_jsonl
from vlmrepro.models import ClipModel
from vlmrepro.smk import running_job

with running_job(snakemake):
    run = snakemake.params.run
    start = time.time()
    clip = ClipModel(snakemake.input.model, run["dtype"], run["device"])
    revision = read_revision(snakemake.input.model)
    classes = load_class_list(snakemake.input.classes)
    records = run_clip_zero_shot(
        clip,
        read_jsonl(snakemake.input.queries),
        classes,
        run["text_template"],
        run["batch_size"],
        revision,
        loader_workers=run["loader_workers"],
    )
    write_jsonl(snakemake.output.rows, records)
    meta = {"device": clip.device, "model_revision": revision, "seconds": round(time.time() - start, 2)}
    # class prompts the tokenizer cut at its context, as upstream's did: scored cut, listed on the page
    meta["truncated_classes"] = clip.truncated_classes(classes, run["text_template"])
    write_json(snakemake.output.meta, {**run, **meta})
