# Datasets: pinned upstream manifests and class lists, images (official archives, user directories or a demo
# world), and the verified per-split manifests every later rule reads.


# Downloads run where the network is (the submitting node); the in-process bookkeeping rules run there too.
localrules:
    download_upstream_file,
    build_mcq_manifest,
    make_synthetic_synonyms,
    download_images,
    prepare_classes,
    plan_queries,


rule download_upstream_file:
    output:
        "resources/upstream/{dataset}/{file}",
    log:
        "logs/download_upstream_file/{dataset}/{file}.log",
    wildcard_constraints:
        file="manifest.jsonl|classes.json|questions.jsonl|synonyms.txt",
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
    resources:
        **compute_resources("build_imagenet_manifest"),
    params:
        directory=lambda wc: DATASETS[wc.dataset]["images"]["directory"],
        devkit=lambda wc: DATASETS[wc.dataset]["images"]["devkit"],
        splits=lambda wc: DATASETS[wc.dataset]["manifest"]["splits"],
    script:
        "../scripts/build_imagenet_manifest.py"


rule build_mcq_manifest:
    input:
        questions=mcq_questions_file,
        images=image_inputs,
    output:
        manifest="resources/built/{dataset}/manifest.jsonl",
        classes="resources/built/{dataset}/classes.json",
        report="resources/built/{dataset}/images.report.json",
    log:
        "logs/build_mcq_manifest/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(MCQ_DATASETS),
    params:
        image_dir=lambda wc: image_root(wc.dataset),
        prefix=lambda wc: image_prefix(wc.dataset),
    run:
        jobs.build_mcq_manifest(input, output, params, log)


rule make_synthetic_synonyms:
    input:
        unpack(synonym_inputs),
    output:
        "resources/synthetic/{dataset}/synonyms.txt",
    log:
        "logs/make_synthetic_synonyms/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(k for k, d in DATASETS.items() if d.get("synonyms", {}).get("synthetic")),
    params:
        generator=versions.SYNTHETIC_DATA,
    run:
        jobs.make_synthetic_synonyms(input, output, log)


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
    # a second or two, and the fine-tunes wait for their training split (like plan_queries)
    priority: 40
    conda:
        "../envs/data.yaml"
    threads: config["data_threads"]
    resources:
        **compute_resources("prepare_split"),
    params:
        prefix=lambda wc: image_prefix(wc.dataset),
        image_root=lambda wc: image_root(wc.dataset),
        on_bad_image=on_bad_image,
        # an image replaced in place changes it (not read by the script)
        images_state=image_folder_state,
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
    # instant, and the fine-tunes wait for their training plans: planned as soon as the split is ready
    priority: 40
    params:
        plan=lambda wc: job_params.queries(config, wc.setting),
    run:
        jobs.plan_queries(input, output, params, log)


rule build_world:
    output:
        images=directory("resources/world/{world}/images"),
        files=expand("resources/world/{{world}}/{file}", file=WORLD_FILES),
    log:
        "logs/build_world/{world}.log",
    wildcard_constraints:
        world=one_of(WORLDS),
    conda:
        "../envs/data.yaml"
    resources:
        **compute_resources("build_world"),
    params:
        generator=versions.WORLD,
        spec=lambda wc: WORLDS[wc.world],
    script:
        "../scripts/build_world.py"


rule world_dataset:
    input:
        manifest=lambda wc: f"resources/world/{world_of(wc.dataset)}/manifest.jsonl",
        classes=lambda wc: f"resources/world/{world_of(wc.dataset)}/classes.json",
    output:
        manifest="resources/world-datasets/{dataset}/manifest.jsonl",
        classes="resources/world-datasets/{dataset}/classes.json",
    log:
        "logs/world_dataset/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(WORLD_DATASETS),
    resources:
        **compute_resources("world_dataset"),
    params:
        n_classes=lambda wc: DATASETS[wc.dataset]["world"]["n_classes"],
    run:
        jobs.world_dataset(input, output, params, log)
