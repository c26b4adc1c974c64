import json

from vlmrepro.io import atomic_dir, read_json, read_jsonl, write_json
from vlmrepro.smk import running_job
from vlmrepro.demo.train import LLAVA_SPEC, llava_examples, train_clip, train_llava

with running_job(snakemake, threads=snakemake.params.threads):
    train = dict(snakemake.params.train)
    kind, inputs = train.pop("kind"), snakemake.input
    world = train.pop("world")
    train.pop("vision", None)
    out = snakemake.output.model
    with atomic_dir(out) as work:
        if kind == "clip":
            log = train_clip(read_jsonl(inputs.clip_corpus), inputs.images, work, train)
        else:
            spec = {**LLAVA_SPEC, **train}
            roots = {world: inputs.images}
            examples = llava_examples(read_json(inputs.vlm_corpus), roots, spec["vicuna_share"], spec["seed"])
            facts = llava_examples(read_json(inputs.wiki_corpus), {}, spec["vicuna_share"], spec["seed"] + 1)
            log = train_llava(inputs.vision, examples, read_json(inputs.classes_full), work, spec, repeated=facts)
    write_json(snakemake.output.log, log)
    print(json.dumps({k: v for k, v in log.items() if k != "losses"}))
