"""The params of the rules' jobs, built from a config without Snakemake (vlmrepro/job_params.py)."""

from vlmrepro import job_params, registry, versions
from vlmrepro.runs import run_config


def paper_config() -> dict:
    config = run_config([])  # config.yaml, the schema's defaults filled in
    registry.add_finetuned_models(config)
    return config


def test_a_fine_tuned_models_generation_params_carry_its_whole_training():
    config = paper_config()
    params = job_params.generation(config, "llava-proj-flowers102", "open_world", "flowers102")
    trained = params["source"]["finetuned"]
    assert trained["base"]["repo"] == config["models"]["llava-1.5-7b"]["hub"]["repo"]
    assert trained["protocol"] == versions.FINETUNE and trained["trainable"] == "projector"
    # evaluated as the LLaVA code base's model_vqa ran it: the generation alone, images padded to a square
    assert params["answer_from"] == "generation" and params["image_aspect_ratio"] == "pad"
    assert params["protocol"] == versions.GENERATION and params["model"] == "llava-proj-flowers102"


def test_upstream_batching_never_raises_a_models_batch():
    config = paper_config()
    model = config["models"]["llava-1.5-7b"]
    setting = {**config["settings"]["closed_world"], "batching": "upstream",
               "upstream_batch_size_by_dataset": {"stanford_cars": 10_000}}  # fmt: skip
    batching = job_params.generation_batching(model, setting, "stanford_cars")
    assert batching["batch_size"] == batching["sort_block"] == model["upstream_batch_size"]
    assert batching["padding_side"] == "checkpoint"
