# Models behind provider APIs (GPT-4-class, Claude, Gemini) and general benchmarks run by an existing harness.


rule api_generate:
    input:
        queries="results/queries/{dataset}/{setting}.jsonl",
    output:
        rows="results/outputs/{model}/{dataset}/{setting}.jsonl",
        meta="results/outputs/{model}/{dataset}/{setting}.meta.json",
    log:
        "logs/api_generate/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        model=one_of(API_MODELS),
        setting=one_of(GENERATE_SETTINGS),
    conda:
        "../envs/api.yaml"
    resources:
        **compute_resources("api_generate"),
        # bounds the API jobs running at once (--resources api_jobs=N); requests inside a job are bounded too
        api_jobs=1,
    params:
        run=lambda wc: job_params.api(config, wc.model, wc.setting),
        # api_error items are asked again on the next run, without --forcerun
        retry=api_retry,
        # responses are cached outside the outputs: a rerun (or another setting asking the same) never pays twice
        cache="results/api_cache/{model}.jsonl",
    script:
        "../scripts/api_generate.py"


rule lmms_eval:
    input:
        model="models/{model}",
    output:
        registry.SCORE_FILE,
    log:
        "logs/lmms_eval/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        dataset=one_of(BENCHMARK_DATASETS),
        setting=one_of(BENCHMARK_SETTINGS),
    conda:
        "../envs/lmms_eval.yaml"
    resources:
        **compute_resources("lmms_eval"),
    params:
        run=lambda wc: job_params.benchmark(config, wc.model, wc.dataset, wc.setting),
        raw="results/benchmarks/{model}/{dataset}/{setting}",
    script:
        "../scripts/lmms_eval.py"
