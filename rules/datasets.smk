# Datasets: pinned upstream manifests and class lists, images (official archives, user directories or a
# synthetic set), and the verified per-split manifests every later rule reads.


# Downloads run where the network is (the submitting node); the in-process bookkeeping rules run there too.
localrules:
    download_upstream_file,
    download_images,
    prepare_classes,
    plan_queries,


rule download_upstream_file:
    output:
        "resources/upstream/{dataset}/{file}",
    log:
        "logs/download_upstream_file/{dataset}/{file}.log",
    wildcard_constraints:
        file="manifest.jsonl|classes.json",
    conda:
        "../envs/data.yaml"
    params:
        source=upstream_source,
    script:
        "../scripts/download_file.py"


rule download_images:
    output:
        directory("resources/images/{dataset}"),
    log:
        "logs/download_images/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(ARCHIVE_DATASETS),
    conda:
        "../envs/data.yaml"
    params:
        archive=lambda wc: DATASETS[wc.dataset]["images"]["archive"],
    script:
        "../scripts/download_images.py"


rule build_imagenet_manifest:
    input:
        classes="resources/upstream/{dataset}/classes.json",
    output:
        "resources/built/{dataset}/manifest.jsonl",
    log:
        "logs/build_imagenet_manifest/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(BUILT_DATASETS),
    conda:
        "../envs/data.yaml"
    params:
        directory=lambda wc: DATASETS[wc.dataset]["images"]["directory"],
        devkit=lambda wc: DATASETS[wc.dataset]["images"]["devkit"],
        splits=lambda wc: DATASETS[wc.dataset]["manifest"]["splits"],
    script:
        "../scripts/build_imagenet_manifest.py"


rule make_synthetic_dataset:
    output:
        manifest="resources/synthetic/{dataset}/manifest.jsonl",
        classes="resources/synthetic/{dataset}/classes.json",
        images=directory("resources/synthetic/{dataset}/images"),
    log:
        "logs/make_synthetic_dataset/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(SYNTHETIC_DATASETS),
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda wc: DATASETS[wc.dataset]["synthetic"],
    script:
        "../scripts/make_synthetic_dataset.py"


rule prepare_classes:
    input:
        raw_classes_file,
    output:
        "results/data/{dataset}/classes.json",
    log:
        "logs/prepare_classes/{dataset}.log",
    run:
        jobs.prepare_classes(input, output, log)


rule prepare_split:
    input:
        manifest=manifest_file,
        classes="results/data/{dataset}/classes.json",
        images=image_inputs,
    output:
        rows="results/data/{dataset}/{split}.jsonl",
        report="results/data/{dataset}/{split}.report.json",
    log:
        "logs/prepare_split/{dataset}/{split}.log",
    conda:
        "../envs/data.yaml"
    threads: 4
    params:
        prefix=lambda wc: image_prefix(wc.dataset),
        image_root=lambda wc: image_root(wc.dataset),
        on_bad_image=config["on_bad_image"],
    script:
        "../scripts/prepare_split.py"


rule plan_queries:
    input:
        rows=planned_split_file,
        classes="results/data/{dataset}/classes.json",
    output:
        "results/queries/{dataset}/{setting}.jsonl",
    log:
        "logs/plan_queries/{dataset}/{setting}.log",
    params:
        plan=query_params,
    run:
        jobs.plan_queries(input, output, params, log)
