# Evaluation: every model sees the same query plan; raw per-item outputs are kept and scored by a cheap rule.


rule generate:
    input:
        queries="results/queries/{dataset}/{setting}.jsonl",
        model="models/{model}",
    output:
        rows="results/outputs/{model}/{dataset}/{setting}.jsonl",
        meta="results/outputs/{model}/{dataset}/{setting}.meta.json",
    log:
        "logs/generate/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(VLM_MODELS),
    conda:
        "../envs/models.yaml"
    resources:
        gpu=model_gpus,
    params:
        run=generation_params,
    script:
        "../scripts/generate.py"


rule clip_zero_shot:
    input:
        queries="results/queries/{dataset}/{setting}.jsonl",
        classes="results/data/{dataset}/classes.json",
        model="models/{model}",
    output:
        rows="results/outputs/{model}/{dataset}/{setting}.jsonl",
        meta="results/outputs/{model}/{dataset}/{setting}.meta.json",
    log:
        "logs/clip_zero_shot/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(CLIP_MODELS),
    conda:
        "../envs/models.yaml"
    resources:
        gpu=model_gpus,
    params:
        run=clip_params,
    script:
        "../scripts/clip_zero_shot.py"


rule score:
    input:
        "results/outputs/{model}/{dataset}/{setting}.jsonl",
    output:
        "results/scores/{model}/{dataset}/{setting}.json",
    log:
        "logs/score/{model}/{dataset}/{setting}.log",
    conda:
        "../envs/data.yaml"
    params:
        resplit=lambda wc: MODELS[wc.model]["score_resplit"],
        protocol=scoring.PROTOCOL_VERSION,
    script:
        "../scripts/score.py"
