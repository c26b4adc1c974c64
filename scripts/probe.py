from vlmrepro import features
from vlmrepro.datasets import load_class_list
from vlmrepro.io import write_json
from vlmrepro.probe import run_probe
from vlmrepro.smk import running_job

with running_job(snakemake):
    p = snakemake.params.probe
    data = features.load(snakemake.input.features, str(p["position"]))
    result = run_probe(
        data,
        len(load_class_list(snakemake.input.classes)),  # ImageNet: 1000 entries, label_idx 0..999
        p["eval_split"],
        p["epochs"],
        lr=p["lr"],
        batch_size=p["probe_batch_size"],
        seed=p["probe_seed"],
        reshuffle=p["reshuffle"],
        normalize=p["normalize"],
        labels=p["labels"],
        fp16_init=p["fp16_init"],
        heldout_fraction=p["heldout_fraction"],
    )
    write_json(snakemake.output[0], result)
    print({k: v for k, v in result.items() if k != "curve"})
