# Models: hub snapshots pinned by revision, or tiny random-weight models of the same classes built locally.
# Both end as a directory under models/ that the evaluation rules load the same way.


localrules:
    download_model,
    link_local_model,


rule download_model:
    output:
        directory("models/{model}"),
    log:
        "logs/download_model/{model}.log",
    wildcard_constraints:
        model=one_of(HUB_MODELS),
    conda:
        "../envs/models.yaml"
    params:
        hub=lambda wc: job_params.hub_source(config, wc.model),
    script:
        "../scripts/download_model.py"


rule link_local_model:
    input:
        local_model_files,
    output:
        directory("models/{model}"),
    log:
        "logs/link_local_model/{model}.log",
    wildcard_constraints:
        model=one_of(LOCAL_MODELS),
    conda:
        "../envs/models.yaml"
    params:
        source=lambda wc: MODELS[wc.model]["local"]["path"],
    script:
        "../scripts/link_local_model.py"


rule build_tiny_model:
    output:
        directory("models/{model}"),
    log:
        "logs/build_tiny_model/{model}.log",
    wildcard_constraints:
        model=one_of(TINY_MODELS),
    conda:
        "../envs/models.yaml"
    resources:
        **compute_resources("build_tiny_model"),
    params:
        family=lambda wc: MODELS[wc.model]["family"],
        spec=lambda wc: MODELS[wc.model]["tiny"],
        builder=versions.TINY_BUILDER,
    script:
        "../scripts/build_tiny_model.py"


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        model=directory("models/{model}"),
        losses="results/finetune/{model}/losses.json",
    log:
        "logs/finetune/{model}.log",
    wildcard_constraints:
        model=one_of(FINETUNED_MODELS),
    priority: 10
    conda:
        "../envs/models.yaml"
    threads: config["train_threads"]
    resources:
        **compute_resources("finetune"),
    params:
        threads=config["train_threads"],
        job=lambda wc: job_params.finetune(config, **FINETUNED_MODELS[wc.model]),
        family=lambda wc: MODELS[wc.model]["family"],
        checkpoints="results/finetune/{model}/checkpoints",
        device=config["device"],
    script:
        "../scripts/finetune.py"


rule build_instruction_mix:
    input:
        unpack(instruction_mix_inputs),
    output:
        mix="results/finetune/{model}/mix.jsonl",
        report="results/finetune/{model}/mix.report.json",
    log:
        "logs/build_instruction_mix/{model}.log",
    wildcard_constraints:
        model=one_of(k for k, e in FINETUNED_MODELS.items() if "mix" in FINETUNES[e["recipe"]]),
    # feeds a fine-tune (priority 10): built as soon as its inputs are
    priority: 10
    conda:
        "../envs/data.yaml"
    resources:
        **compute_resources("build_instruction_mix"),
    params:
        mix=lambda wc: FINETUNES[FINETUNED_MODELS[wc.model]["recipe"]]["mix"],
        prompt=lambda wc: FINETUNES[FINETUNED_MODELS[wc.model]["recipe"]]["prompt"],
    script:
        "../scripts/build_instruction_mix.py"


rule train_world_model:
    input:
        unpack(world_model_inputs),
    output:
        model=directory("models/{model}"),
        log="results/train/{model}.json",
    log:
        "logs/train_world_model/{model}.log",
    wildcard_constraints:
        model=one_of(TRAINED_MODELS),
    # the demo's critical path (its models feed most jobs): started before anything that can wait
    priority: 50
    conda:
        "../envs/models.yaml"
    threads: config["train_threads"]
    resources:
        **compute_resources("train_world_model"),
    params:
        threads=config["train_threads"],
        train=lambda wc: MODELS[wc.model]["train"],
        trainer=versions.WORLD_TRAINING,
    script:
        "../scripts/train_world_model.py"
