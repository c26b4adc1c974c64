from vlmrepro import features
from vlmrepro.backends import read_revision
from vlmrepro.datasets import load_class_list
from vlmrepro.io import atomic_dir, read_jsonl
from vlmrepro.models import ClipModel, VisionLanguageModel
from vlmrepro.prompts import render
from vlmrepro.registry import CLIP_FAMILIES
from vlmrepro.smk import running_job

with running_job(snakemake):
    run = snakemake.params.run
    if run["family"] in CLIP_FAMILIES:
        clip = ClipModel(snakemake.input.model, run["dtype"], run["device"])
        encode = lambda images: (features.clip_features(clip, images), None, None)
        settings = {"device": clip.device, "dtype": str(clip.dtype)}
    else:
        vlm, _ = VisionLanguageModel.for_job(snakemake.input.model, run)
        prompt = render(vlm.template, run["question"])
        encode = lambda images: features.vlm_features(vlm, images, prompt, run["positions"])
        settings = vlm.generation_settings()
    out = snakemake.output[0]
    with atomic_dir(out) as work:  # renamed onto the output only when every file of this job is written
        features.extract(
            encode,
            read_jsonl(snakemake.input.queries),
            load_class_list(snakemake.input.classes),
            run["positions"],
            work,
            run["batch_size"],
            run["shard_size"],
            job=snakemake.params.shard,
            # finished batches, written ahead: a killed job's rerun encodes only the batch in flight
            cache_dir=snakemake.params.cache,
            cache_context={**run, **settings, "model_revision": read_revision(snakemake.input.model)},
        )
