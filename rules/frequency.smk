# Class-name frequency in the VLM's training corpora vs per-class accuracy (Figure 3, Table 11).


localrules:
    download_corpus,


rule download_corpus:
    output:
        "resources/corpora/{corpus}.json",
    log:
        "logs/download_corpus/{corpus}.log",
    wildcard_constraints:
        corpus=one_of(k for k, c in CORPORA.items() if "hub" in c),
    conda:
        "../envs/models.yaml"
    params:
        hub=lambda wc: CORPORA[wc.corpus]["hub"],
    script:
        "../scripts/download_corpus.py"


rule tokenize_corpus:
    input:
        "resources/corpora/{corpus}.json",
    output:
        "results/frequency/{corpus}.tokens.jsonl.gz",
    log:
        "logs/tokenize_corpus/{corpus}.log",
    conda:
        "../envs/data.yaml"
    resources:
        **compute_resources("tokenize_corpus"),
    params:
        unit=config["frequency"]["sentence_unit"],
        lowercase=config["frequency"]["lowercase"],
        protocol=versions.FREQUENCY,
    script:
        "../scripts/tokenize_corpus.py"


rule count_frequency:
    input:
        tokens="results/frequency/{corpus}.tokens.jsonl.gz",
        classes="results/data/{dataset}/classes.json",
    output:
        "results/frequency/{corpus}/{dataset}.json",
    log:
        "logs/count_frequency/{corpus}/{dataset}.log",
    conda:
        "../envs/data.yaml"
    resources:
        **compute_resources("count_frequency"),
    params:
        protocol=versions.FREQUENCY,
    script:
        "../scripts/count_frequency.py"


rule correlate_frequency:
    input:
        unpack(corpus_counts),
        outputs=frequency_source,
        classes="results/data/{dataset}/classes.json",
    output:
        registry.SCORE_FILE,
    log:
        "logs/correlate_frequency/{model}/{dataset}/{setting}.log",
    wildcard_constraints:
        setting=one_of(FREQUENCY_SETTINGS),
    localrule: True
    resources:
        **compute_resources("correlate_frequency"),
    params:
        protocol=versions.FREQUENCY,
        cut_at_hyphen=cut_finetuned_labels,
    run:
        jobs.correlate_frequency(input, output, params, log)


rule world_corpus:
    input:
        lambda wc: "resources/world/{name}/{part}.json".format(**CORPORA[wc.corpus]["world"]),
    output:
        "resources/corpora/{corpus}.json",
    log:
        "logs/world_corpus/{corpus}.log",
    wildcard_constraints:
        corpus=one_of(k for k, c in CORPORA.items() if "world" in c),
    resources:
        **compute_resources("world_corpus"),
    run:
        jobs.world_corpus(input, output, log)
