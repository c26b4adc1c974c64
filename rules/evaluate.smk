# Evaluation: every model sees the same query plan; raw per-item outputs are kept and scored by a cheap rule.


rule generate:
    input:
        queries="results/queries/{dataset}/{setting}.jsonl",
        model="models/{model}",
    output:
        rows="results/outputs/{model}/{dataset}/{setting}.jsonl",
        meta="results/outputs/{model}/{dataset}/{setting}.meta.json",
    params:
        run=generation_params,
    log:
        "logs/generate/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(VLM_MODELS),
    resources:
        gpu=model_gpus,
    conda:
        "../envs/models.yaml"
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
    params:
        run=clip_params,
    log:
        "logs/clip_zero_shot/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(CLIP_MODELS),
    resources:
        gpu=model_gpus,
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/clip_zero_shot.py"


rule score:
    input:
        "results/outputs/{model}/{dataset}/{setting}.jsonl",
    output:
        "results/scores/{model}/{dataset}/{setting}.json",
    params:
        resplit=lambda wc: MODELS[wc.model]["score_resplit"],
        protocol=scoring.PROTOCOL_VERSION,
    log:
        "logs/score/{model}/{dataset}/{setting}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/score.py"
