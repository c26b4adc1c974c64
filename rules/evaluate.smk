# Evaluation: every model sees the same query plan; raw per-item outputs are kept and scored by a cheap rule.


localrules:
    gather_outputs,
    gather_loglik,
    gather_features,
    score,
    score_loglik,
    score_baseline,
    rescore_synonyms,


# Generation is split into shards (datasets.<name>.shards) of whole batches, each a job of its own, and gathered.
rule generate:
    input:
        queries="results/queries/{dataset}/{setting}.jsonl",
        model="models/{model}",
    output:
        rows="results/shards/{model}/{dataset}/{setting}/{shard}.jsonl",
        meta="results/shards/{model}/{dataset}/{setting}/{shard}.meta.json",
    log:
        "logs/generate/{model}/{dataset}/{setting}/{shard}.log",
    wildcard_constraints:
        model=one_of(VLM_MODELS),
        setting=one_of(GENERATE_SETTINGS),
        shard=SHARD,
    conda:
        "../envs/models.yaml"
    resources:
        **compute_resources("generate"),
    params:
        run=lambda wc: job_params.generation(config, wc.model, wc.setting, wc.dataset),
        shard=lambda wc: parse_shard(wc.shard),
        # finished batches, written ahead: a killed job's rerun recomputes only the batch in flight
        cache="results/cache/generate/{model}/{dataset}/{setting}/{shard}.jsonl",
    script:
        "../scripts/generate.py"


rule gather_outputs:
    input:
        rows=lambda wc: shard_files(wc, "jsonl"),
        meta=lambda wc: shard_files(wc, "meta.json"),
    output:
        rows="results/outputs/{model}/{dataset}/{setting}.jsonl",
        meta="results/outputs/{model}/{dataset}/{setting}.meta.json",
    log:
        "logs/gather_outputs/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(VLM_MODELS),
        setting=one_of(GENERATE_SETTINGS),
    run:
        jobs.gather_outputs(input, output, log)


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
        setting=one_of(CLIP_SETTINGS),
    conda:
        "../envs/models.yaml"
    resources:
        **compute_resources("clip_zero_shot"),
    params:
        run=lambda wc: job_params.clip(config, wc.model, wc.setting),
    script:
        "../scripts/clip_zero_shot.py"


rule loglik:
    input:
        queries="results/queries/{dataset}/{setting}.jsonl",
        classes="results/data/{dataset}/classes.json",
        model="models/{model}",
    output:
        rows="results/shards/{model}/{dataset}/{setting}/{shard}.jsonl",
        logprobs="results/shards/{model}/{dataset}/{setting}/{shard}.npz",
        meta="results/shards/{model}/{dataset}/{setting}/{shard}.meta.json",
    log:
        "logs/loglik/{model}/{dataset}/{setting}/{shard}.log",
    wildcard_constraints:
        model=one_of(VLM_MODELS),
        setting=one_of(LOGLIK_SETTINGS),
        shard=SHARD,
    conda:
        "../envs/models.yaml"
    resources:
        **compute_resources("loglik"),
    params:
        run=lambda wc: job_params.loglik(config, wc.model, wc.setting),
        shard=lambda wc: parse_shard(wc.shard),
        # each scored item, written ahead: a killed job's rerun scores only the unfinished items
        cache="results/cache/loglik/{model}/{dataset}/{setting}/{shard}.jsonl",
    script:
        "../scripts/loglik.py"


rule gather_loglik:
    input:
        rows=lambda wc: shard_files(wc, "jsonl"),
        logprobs=lambda wc: shard_files(wc, "npz"),
        meta=lambda wc: shard_files(wc, "meta.json"),
    output:
        rows="results/outputs/{model}/{dataset}/{setting}.jsonl",
        logprobs="results/outputs/{model}/{dataset}/{setting}.npz",
        meta="results/outputs/{model}/{dataset}/{setting}.meta.json",
    log:
        "logs/gather_loglik/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(VLM_MODELS),
        setting=one_of(LOGLIK_SETTINGS),
    run:
        jobs.gather_loglik(input, output, log)


rule score_loglik:
    input:
        rows="results/outputs/{model}/{dataset}/{setting}.jsonl",
        logprobs="results/outputs/{model}/{dataset}/{setting}.npz",
    output:
        registry.SCORE_FILE,
    log:
        "logs/score_loglik/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        setting=one_of(LOGLIK_SETTINGS),
    params:
        scoring=lambda wc: job_params.loglik_scoring(config, wc.setting),
    run:
        jobs.score_loglik(input, output, params, log)


rule score:
    input:
        "results/outputs/{model}/{dataset}/{setting}.jsonl",
        unpack(score_extra_inputs),
    output:
        registry.SCORE_FILE,
    log:
        "logs/score/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(VLM_MODELS + CLIP_MODELS + API_MODELS),
        setting=one_of(GENERATE_SETTINGS + CLIP_SETTINGS),
    params:
        resplit=lambda wc: MODELS[wc.model]["score_resplit"],
        rule=lambda wc: SETTINGS[wc.setting]["scoring"],
        mcq=lambda wc: job_params.mcq(config, wc.setting),
        protocol=versions.SCORING,
    run:
        jobs.score(input, output, params, log)


rule check_invariance:
    input:
        queries=lambda wc: f"results/queries/{wc.dataset}/{SETTINGS[wc.setting]['source']}.jsonl",
        outputs=lambda wc: f"results/outputs/{wc.model}/{wc.dataset}/{SETTINGS[wc.setting]['source']}.jsonl",
        model="models/{model}",
    output:
        registry.SCORE_FILE,
    log:
        "logs/check_invariance/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(VLM_MODELS),
        setting=one_of(ROBUSTNESS_SETTINGS),
    conda:
        "../envs/models.yaml"
    resources:
        **compute_resources("check_invariance"),
    params:
        run=lambda wc: job_params.generation(config, wc.model, SETTINGS[wc.setting]["source"], wc.dataset),
        subset=lambda wc: SETTINGS[wc.setting]["limit"],
        work_dir="results/robustness/{model}/{dataset}/{setting}",
    script:
        "../scripts/check_invariance.py"


rule score_baseline:
    input:
        unpack(baseline_inputs),
    output:
        registry.SCORE_FILE,
    log:
        "logs/score_baseline/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(BASELINE_MODELS),
    params:
        baseline=lambda wc: MODELS[wc.model]["baseline"],
        eval_split=lambda wc: DATASETS[wc.dataset]["eval_split"],
        protocol=versions.SCORING,
    run:
        jobs.score_baseline(input, output, params, log)


rule rescore_synonyms:
    input:
        outputs=lambda wc: f"results/outputs/{wc.model}/{wc.dataset}/{SETTINGS[wc.setting]['source']}.jsonl",
        queries=lambda wc: f"results/queries/{wc.dataset}/{SETTINGS[wc.setting]['source']}.jsonl",
        classes="results/data/{dataset}/classes.json",
        synonyms=synonyms_file,
    output:
        registry.SCORE_FILE,
    log:
        "logs/rescore_synonyms/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        setting=one_of(RESCORE_SETTINGS),
    params:
        resplit=lambda wc: MODELS[wc.model]["score_resplit"],
        include_class_name=lambda wc: SETTINGS[wc.setting]["include_class_name"],
        protocol=versions.SCORING,
    run:
        jobs.rescore_synonyms(input, output, params, log)


# Features of every manifest row: datasets.<name>.shards jobs, each a run of whole feature files, then gathered.
rule extract_features:
    input:
        queries="results/queries/{dataset}/{setting}.jsonl",
        classes="results/data/{dataset}/classes.json",
        model="models/{model}",
    output:
        directory("results/shards/features/{model}/{dataset}/{setting}/{shard}"),
    log:
        "logs/extract_features/{model}/{dataset}/{setting}/{shard}.log",
    wildcard_constraints:
        setting=one_of(FEATURE_SETTINGS),
        shard=SHARD,
    conda:
        "../envs/models.yaml"
    resources:
        **compute_resources("extract_features"),
    params:
        run=lambda wc: job_params.features(config, wc.model, wc.setting),
        shard=lambda wc: parse_shard(wc.shard),
        cache="results/cache/extract_features/{model}/{dataset}/{setting}",
    script:
        "../scripts/extract_features.py"


rule gather_features:
    input:
        lambda wc: shard_files(wc, None, "results/shards/features"),
    output:
        directory("results/features/{model}/{dataset}/{setting}"),
    log:
        "logs/gather_features/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        setting=one_of(FEATURE_SETTINGS),
    run:
        jobs.gather_features(input, output, log)


rule probe:
    input:
        features=probe_features_dir,
        classes="results/data/{dataset}/classes.json",
    output:
        registry.SCORE_FILE,
    log:
        "logs/probe/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        setting=one_of(PROBE_SETTINGS),
    conda:
        "../envs/models.yaml"
    resources:
        **compute_resources("probe"),
    params:
        probe=lambda wc: job_params.probe(config, wc.setting, wc.dataset),
    script:
        "../scripts/probe.py"
