"""The workflow as a user runs it: planning the paper, the cluster profile, lint, the demo end to end, reruns
driven by params, configuration errors and failing downloads / missing images."""

import copy
import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import DEMO, DEMO_FILE, REPO, snakemake


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts from a dry run's 'Job stats' table."""
    stats = output.split("Job stats:")[1].split("Reasons:")[0] if "Job stats:" in output else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"}


def planned_wildcards(output: str, rule: str) -> list[str]:
    blocks = re.findall(rf"rule {rule}:\n(.*?)(?:\n\n|\Z)", output, re.S)
    return [re.search(r"wildcards: (.*)", b)[1] for b in blocks if "wildcards:" in b]


def test_paper_config_plans_every_job_without_data(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["api"]["enabled"] = True  # plan the API cells whether or not this machine holds keys
    proc = snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=tmp_path)
    jobs = planned_jobs(proc.stdout)
    # Table 1: 7 VLMs x (4 open-world + 3 closed-world; ImageNet closed-world is N/A in the paper) = 49
    # Table 2: 2 VLMs x (3 more wordings x 4 datasets + fixed order and CoT x 3 datasets) = 36
    # Table 9: 2 VLMs x 4 K x 4 datasets = 32
    # Table 5: 7 VLMs + LLaVA w/ GT class + 2 fine-tuned; Table 4: 3 caption-tuned models
    # padding table (3 datasets): BLIP-2's 4 fast-batching cells (InstructBLIP pads left: no padding cells)
    padding = 3 * 4
    assert jobs["gather_outputs"] == 49 + 36 + 32 + 11 + 10 + 3 + 1 + padding  # + fine-tuned evaluations (+ §4.3)
    # each output generated in shards (datasets.<name>.shards: Flowers and Cars 4, Caltech 2)
    assert jobs["generate"] == 1000 + 4 * (4 + 4 + 2)
    # Table 1: 2 CLIPs x 4 datasets; Table 9: CLIP-L x 4 K x 4 datasets
    assert jobs["clip_zero_shot"] == 8 + 16
    assert jobs["download_model"] == 9 + 1  # + Vicuna-7B-v1.5, the LoRA merge base
    assert jobs["build_imagenet_manifest"] == 1
    # features: 16 (+ Table 10 positions), ImageNet's in 9 jobs of whole feature files each
    assert jobs["loglik"] == 8 and jobs["gather_features"] == 16 + 1 and jobs["extract_features"] == 13 + 4 * 9
    assert jobs["probe"] == 34
    assert jobs["download_corpus"] == 2 and jobs["correlate_frequency"] == 8 + 4 + 4
    # Tables 1, 2, 3, 9, 10, 11 and 12, 7, 4, 5, 8, 13, the text's numbers, robustness, padding; then the summary
    assert jobs["build_table"] == 15 and jobs["render_notebook"] == 15 and jobs["render_summary"] == 1
    assert jobs["check_invariance"] == 2
    # Table 3 right: projector (4 datasets), LoRA (3; ImageNet diverged in the paper), Q-Former (4);
    # paper §4.3 ImageNet + LLaVA mix (1); Table 4 captions (3)
    assert jobs["finetune"] == 4 + 3 + 4 + 1 + 3 and jobs["build_instruction_mix"] == 1
    # API models: Table 1 (3 x 4 x 2) + Table 12 GPT-4 fixed order and CoT (2 x 4) + Table 5 (3) + captions (3)
    assert jobs["api_generate"] == 24 + 8 + 3 + 3
    # Table 8: 10 models rescored; Table 5: ImageWikiQA from the pinned file + 2 naive baselines; Table 13
    # Table 7: the statistics of 4 manifests
    assert jobs["rescore_synonyms"] == 10 and jobs["build_mcq_manifest"] == 1 and jobs["score_baseline"] == 2 + 4
    assert jobs["lmms_eval"] == 2 * 4
    assert jobs["download_upstream_file"] == 3 * 2 + 1 + 2  # manifests + class lists, ImageWikiQA, synonyms


def test_paper_without_api_keys_plans_no_api_job_and_with_one_only_its_providers(tmp_path, monkeypatch):
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    proc = snakemake("-n", workdir=tmp_path)  # config.yaml: api.enabled auto
    jobs = planned_jobs(proc.stdout)
    assert "api_generate" not in jobs
    assert jobs["finetune"] == 4 + 3 + 4 + 1  # the caption recipe needs GPT-4 captions: not run either
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-used")
    jobs = planned_jobs(snakemake("-n", workdir=tmp_path).stdout)
    assert jobs["api_generate"] == 4 * 2 + 1  # Claude 3 only: Table 1 (4 datasets x 2) and Table 5


def test_gpu_hour_estimate_prices_the_paper_before_anything_runs(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "vlmrepro.estimate", "--directory", str(tmp_path)], capture_output=True, text=True, check=True
    )
    lines = proc.stdout.splitlines()
    assert lines[-2].startswith("GPU hours on one NVIDIA H200")
    assert lines[-1].startswith("cluster check: all")  # the plan against profiles/slurm/partitions.yaml
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:-2] if line and line[0].isalpha()}
    # ImageNet generation is 25 shards per (model, setting); every row of a GPU rule has jobs, items and hours
    assert int(rows["generate"][0]) > 142 * 5 and float(rows["generate"][2]) > 40  # ~60 at typical answer lengths
    assert float(rows["finetune"][2]) > float(rows["clip_zero_shot"][2]) > 0
    assert rows["score"][1:] == ["-", "-"]  # CPU bookkeeping costs no GPU time
    assert float(rows["total"][1]) == pytest.approx(sum(float(v[2]) for v in rows.values() if v[2:] and v[2] != "-"), abs=0.5)


def test_slurm_profile_plans_gpu_jobs(tmp_path, monkeypatch):
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    proc = snakemake("--profile", str(REPO / "profiles" / "slurm"), "-n", workdir=tmp_path)
    # 151 outputs, ImageNet's in 25 shards and others in 2-4 (without an OpenAI key, not the caption fine-tunes')
    assert planned_jobs(proc.stdout)["generate"] == 1030

    def resources(rule):  # the resources line of the rule's first planned job
        return re.search(rf"^rule {rule}:\n(?:    .*\n)*?    resources: (.*)$", proc.stdout, re.M)[1]

    assert "gpu=4" in resources("finetune")
    # requests from the config (resources, cluster): any GPU type unless the config names one, runtime from the
    # estimate's throughput table
    generate = resources("generate")
    assert "gpu=1" in generate and "gpu_model" not in generate and "cpus_per_task=8" in generate
    assert re.search(r"runtime=\d+", generate)
    assert "gpu" not in resources("probe") and "mem_mb=96000" in resources("probe")


def test_lint_is_clean(tmp_path):
    proc = snakemake("--lint", workdir=tmp_path)
    assert "Congratulations" in proc.output


def write_config(tmp_path, config) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_unknown_config_key_stops_with_its_name(tmp_path):
    config = copy.deepcopy(DEMO)
    config["models"]["tiny-llava"]["batchsize"] = 4
    proc = snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=tmp_path, check=False)
    assert proc.returncode != 0
    assert "batchsize" in proc.output


@pytest.mark.parametrize("registry, name", [("datasets", ".."), ("models", "../../x"), ("settings", "a/b")])
def test_a_name_that_would_leave_its_folder_stops_with_the_name(tmp_path, registry, name):
    """Registry keys name folders and files of the run: one that is not a single safe path component is refused
    before anything is written, anywhere."""
    config = copy.deepcopy(DEMO)
    config[registry][name] = next(iter(config[registry].values()))
    workdir = tmp_path / "run"
    proc = snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=workdir, check=False)
    assert proc.returncode != 0
    assert repr(name) in proc.output and "does not match" in proc.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "run"]  # nothing outside the run


def test_an_absurd_shard_count_stops_with_its_key(tmp_path):
    config = copy.deepcopy(DEMO)
    config["datasets"]["shapes12"]["shards"] = 1_000_000  # a million jobs: gigabytes of DAG before any message
    proc = snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=tmp_path, check=False)
    assert proc.returncode != 0 and "shards" in proc.output and "1000000" in proc.output


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    """Nine nested aliases of nine: 387 million values from eleven lines, under a free-form key the schema allows."""
    levels = ["a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join("      " + line for line in levels)
    text = DEMO_FILE.read_text().replace("worlds:\n  shapes:\n", f"worlds:\n  shapes:\n    unused:\n{bomb}\n", 1)
    (tmp_path / "bomb.yaml").write_text(text)
    proc = snakemake("-n", "--configfile", str(tmp_path / "bomb.yaml"), workdir=tmp_path, check=False, timeout=120)
    assert proc.returncode != 0 and "nested YAML aliases" in proc.output and "worlds.shapes.unused" in proc.output


def test_wrong_type_stops_with_its_name(tmp_path):
    config = copy.deepcopy(DEMO)
    config["settings"]["open_world"]["max_new_tokens"] = "many"
    proc = snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=tmp_path, check=False)
    assert proc.returncode != 0
    assert "max_new_tokens" in proc.output and "many" in proc.output


def test_a_misspelt_world_key_stops_with_its_name(tmp_path):
    config = copy.deepcopy(DEMO)
    config["worlds"]["shapes"]["train_per_clas"] = 10  # would leave train_per_class at its default unseen
    proc = snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=tmp_path, check=False)
    assert proc.returncode != 0 and "train_per_clas" in proc.output


def test_the_schema_lists_every_world_key():
    from vlmrepro.demo.world import DEFAULT_SPEC

    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    assert set(schema["properties"]["worlds"]["additionalProperties"]["properties"]) == set(DEFAULT_SPEC)


def test_dangling_reference_stops_with_the_key(tmp_path):
    config = copy.deepcopy(DEMO)
    config["tables"]["table1"]["groups"][0]["models"].append("tiny-llava-typo")
    proc = snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=tmp_path, check=False)
    assert proc.returncode != 0 and "tables.table1.groups[0].models: unknown model 'tiny-llava-typo'" in proc.output


def local_dataset_config(tmp_path, checksum=None, directory=None):
    """A 'user' dataset fetched through the real download rule from a file:// URL."""
    rows = [{"image": f"./data/Cars/cars_test/{i:05d}.jpg", "label": "a car", "split": "test"} for i in range(3)]
    manifest = tmp_path / "cars.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(["a car", "a bus"]))
    sha = lambda p: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    config = copy.deepcopy(DEMO)
    config["datasets"] = {
        "cars": {
            "paper_key": "stanford_cars",
            "eval_split": "test",
            "manifest": {"url": manifest.as_uri(), "checksum": checksum or sha(manifest)},
            "classes": {"url": classes.as_uri(), "checksum": sha(classes)},
            "images": {"prefix": "./data/Cars/", "directory": str(directory or tmp_path / "no-such-dir")},
        }
    }
    config["tables"] = {"table1": config["tables"]["table1"]}
    config["finetunes"] = {}
    config["report"]["findings"] = []
    for group in config["tables"]["table1"]["groups"]:
        group["datasets"] = ["cars"]
    return write_config(tmp_path, config)


@pytest.mark.slow
def test_missing_image_directory_plans_but_fails_naming_it(tmp_path):
    configfile = local_dataset_config(tmp_path)
    assert snakemake("-n", "--configfile", configfile, workdir=tmp_path).returncode == 0
    proc = snakemake("--configfile", configfile, "--cores", "1", "results/data/cars/test.jsonl", workdir=tmp_path, check=False)
    assert proc.returncode != 0
    assert f"image directory {tmp_path / 'no-such-dir'} does not exist" in proc.output
    assert not (tmp_path / "results/data/cars/test.jsonl").exists()
    assert (tmp_path / "resources/upstream/cars/manifest.jsonl").exists()  # verified download kept


@pytest.mark.slow
def test_bad_checksum_fails_naming_the_url_and_keeps_nothing(tmp_path):
    configfile = local_dataset_config(tmp_path, checksum="sha256:" + "0" * 64)
    proc = snakemake("--configfile", configfile, "--cores", "1", "resources/upstream/cars/manifest.jsonl", workdir=tmp_path, check=False)
    assert proc.returncode != 0
    assert "cars.jsonl" in proc.output and "expected 000000" in proc.output
    assert not list((tmp_path / "resources/upstream/cars").glob("*"))


@pytest.mark.slow
def test_a_config_edited_during_a_run_changes_none_of_its_jobs(tmp_path):
    """Jobs started as processes of their own (run: rules without --force-use-threads, cluster jobs) parse the
    workflow again: they must plan with the configuration the run started with, not the file as it is by then."""
    import subprocess

    from conftest import snakemake_command
    from PIL import Image

    for i in range(3):
        (tmp_path / "images/cars_test").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / f"images/cars_test/{i:05d}.jpg")
    configfile = Path(local_dataset_config(tmp_path, directory=tmp_path / "images"))
    original = configfile.read_text()
    question = yaml.safe_load(original)["settings"]["open_world"]["question"]
    edited = original.replace(question, "Which vehicle is this?")
    target = "results/queries/cars/open_world.jsonl"
    cmd, env = snakemake_command("--cores", "1", target, "--configfile", str(configfile), workdir=tmp_path, threads=False)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as run:
        for line in run.stdout:  # the workflow is parsed: its jobs (downloads first) have not started yet
            if "Building DAG of jobs" in line:
                configfile.write_text(edited)
                break
        log = line + run.stdout.read()
    assert run.returncode == 0, log[-3000:]
    planned = [json.loads(row)["question"] for row in (tmp_path / target).read_text().splitlines()]
    assert planned and all(question in text for text in planned), planned
    # the file restored: the plan is the one it describes; edited again: the plan reruns with the new question
    configfile.write_text(original)
    assert "Nothing to be done" in snakemake("-n", target, "--configfile", str(configfile), workdir=tmp_path).output
    configfile.write_text(edited)
    assert "plan_queries" in snakemake("-n", target, "--configfile", str(configfile), workdir=tmp_path).output


@pytest.mark.slow
def test_an_image_replaced_in_place_reruns_its_split_and_records_its_new_hash(tmp_path):
    """Same name, same folder, new pixels: the plan's fingerprint of the folder (size and mtime of every file)
    changes, so the split is prepared again and records the new content hash every cache key of the item names."""
    from PIL import Image

    folder = tmp_path / "images/cars_test"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i:05d}.jpg")
    configfile = local_dataset_config(tmp_path, directory=tmp_path / "images")
    target = "results/data/cars/test.jsonl"
    snakemake("--cores", "1", target, "--configfile", configfile, workdir=tmp_path)
    hashes = [json.loads(row)["sha256"] for row in (tmp_path / target).read_text().splitlines()]
    assert "Nothing to be done" in snakemake("-n", target, "--configfile", configfile, workdir=tmp_path).output
    Image.new("RGB", (8, 8), (0, 0, 200)).save(folder / "00001.jpg")
    assert "prepare_split" in snakemake("-n", target, "--configfile", configfile, workdir=tmp_path).output
    snakemake("--cores", "1", target, "--configfile", configfile, workdir=tmp_path)
    again = [json.loads(row)["sha256"] for row in (tmp_path / target).read_text().splitlines()]
    assert again[0] == hashes[0] and again[2] == hashes[2] and again[1] != hashes[1]
    assert "Nothing to be done" in snakemake("-n", target, "--configfile", configfile, workdir=tmp_path).output


# --- the embedded demo, run once -----------------------------------------------------------------------------


def test_demo_dry_run_plans_the_whole_dag(tmp_path):
    proc = snakemake("-n", "--configfile", str(REPO / "demo" / "config.yaml"), workdir=tmp_path)
    jobs = planned_jobs(proc.stdout)
    # Table 1: 2 VLMs x 2 datasets x 2; Table 2: the LLaVA's 4 more settings; Table 9: K = 2 and 30; Table 5: 2 VLMs,
    # w/ GT class, 2 fine-tuned; Table 3: 3 fine-tuned; Table 4: captions of the training images and their evaluation
    # + the mix model on its classification set; padding table: the BLIP-2's fixed order and both fast-batching cells;
    # the modern table: the tiny Qwen2.5-VL's open and closed world
    assert jobs["generate"] == 8 + 4 + 2 + 5 + 3 + 2 + 1 + 3 + 2
    # the world, its CLIP and LLaVA trained by rules; BLIP-2 and a Qwen2.5-VL (family chat) built as tiny random models
    assert jobs["build_world"] == 1 and jobs["train_world_model"] == 2 and jobs["build_tiny_model"] == 2
    assert jobs["clip_zero_shot"] == 2 + 2 and jobs["check_findings"] == 1 and jobs["check_invariance"] == 1
    # proj, LoRA, Q-Former, captions; the instruction mix
    assert jobs["finetune"] == 4 + 1 and jobs["build_instruction_mix"] == 1 and jobs["world_dataset"] == 2
    # features: shapes12's in 2 jobs of one feature file each (settings.features.shards_by_dataset), shapes36's of
    # the trained LLaVA, and CLIP's of both; probabilistic inference of the LLaVA (shapes36) and BLIP-2 (shapes12)
    # (the LLaVA's in two jobs, gathered: settings.prob_inference.shards_by_dataset), and the Qwen2.5-VL's (shapes12)
    assert jobs["loglik"] == 2 + 1 + 1 and jobs["gather_loglik"] == 3
    assert jobs["gather_features"] == 2 + 2 + 1 and jobs["extract_features"] == 3 + 2 + 2
    # the LLaVA's 4 probes on shapes12 (Tables 3, 10) and 2 on shapes36 (Table 3, finding 3); CLIP's linear probes;
    # the Qwen2.5-VL's last-token probe
    assert jobs["probe"] == 4 + 2 + 2 + 1
    assert jobs["correlate_frequency"] == 6 and jobs["build_table"] == 14 and jobs["rescore_synonyms"] == 2
    assert "download_model" not in jobs and "download_upstream_file" not in jobs  # nothing of config.yaml leaks in


@pytest.mark.slow
def test_demo_report_holds_table1(demo_run):
    table = (demo_run / "results/tables/table1.csv").read_text()
    n_vlms = len(DEMO["tables"]["table1"]["groups"][0]["models"])
    assert table.count("\n") == 1 + n_vlms * 2 * 2 + 2
    html = (demo_run / "results/report/table1.html").read_text()
    assert "Table 1: VLMs vs CLIP" in html and "LLaVA1.5-7B [tiny-llava]" in html
    assert "data:image/png;base64" in html  # the Figure 1 chart is embedded
    assert "table1.html" in (demo_run / "results/report/index.html").read_text()


@pytest.mark.parametrize(
    "table, expected",
    [
        ("table2", ["Prob Inference (Sum Tokens)", "w/ Label (Random) + CoT", "w/ Prompt Alternative 2"]),
        ("table3", ["Probing: Avg Tok", "Fine-tuning: Linear", "Fine-tuning: Proj (Q-Former)", "Figure 5"]),
        ("table9", ["Figure 2", "Figure 4"]),
        ("table10", ["probe position -1 (Last)"]),
        ("table11", ["Figure 3", "spearman_r"]),
        ("table5", ["ImageWikiQA", "random fallbacks", "Naive Baselines: w/ GT Class", "by construction"]),
        ("table8", ["with synonyms", "without synonyms"]),
        ("table4", ["Fine-tuned: Captioning Data", "Zero-shot (no fine-tuning)"]),
        ("table7", ["n_validation_images", "n_classes"]),
        ("section4", ["projector fine-tuned on ImageNet 1.28M + LLaVA 665K", "frequency from pre-training data only"]),
        ("padding", ["ours_fast", "comes from padding"]),
    ],
)
@pytest.mark.slow
def test_demo_renders_every_table_page(demo_run, table, expected):
    import pandas as pd

    frame = pd.read_csv(demo_run / f"results/tables/{table}.csv")
    assert frame["ours"].notna().any()
    html = (demo_run / f"results/report/{table}.html").read_text()
    assert all(text in html for text in expected)
    assert f"{table}.html" in (demo_run / "results/report/index.html").read_text()


@pytest.mark.slow
def test_demo_imagewikiqa_runs_every_model_and_the_baselines(demo_run):
    import pandas as pd

    table = pd.read_csv(demo_run / "results/tables/table5.csv", keep_default_na=False, na_values={"ours": [""]})
    computed = table[table.model != ""]
    assert computed["ours"].notna().all() and (computed["n_evaluated"] == computed["n_items"]).all()
    baseline = json.loads((demo_run / "results/scores/max-frequency/wikiqa/imagewikiqa.json").read_text())
    rows = [json.loads(line) for line in (demo_run / "resources/built/wikiqa/manifest.jsonl").open()]
    top = max(sum(r["label"] == x for r in rows) for x in "ABCD")
    assert baseline["accuracy"] == pytest.approx(100 * top / len(rows))
    assert json.loads((demo_run / "resources/built/wikiqa/images.report.json").read_text())["n_missing_images"] == 0
    gt = [json.loads(line) for line in (demo_run / "results/queries/wikiqa/imagewikiqa_gt_class.jsonl").open()]
    assert all(rows[q["row"]]["classname"] in q["question"].split("\n")[0] for q in gt)  # the object is named
    score = json.loads((demo_run / "results/scores/tiny-llava-lora-shapes36/wikiqa/imagewikiqa.json").read_text())
    assert "n_random_fallback" in score
    prompt = json.loads((demo_run / "results/outputs/tiny-llava-lora-shapes36/wikiqa/imagewikiqa.jsonl").open().readline())["prompt"]
    assert prompt.endswith("ASSISTANT: Let's think step by step.")  # the demo leaves the doubled ASSISTANT: out
    mix = json.loads((demo_run / "results/finetune/tiny-llava-mix-shapes36/mix.report.json").read_text())
    world = DEMO["worlds"]["shapes"]
    assert mix["n_classification"] == 36 * world["train_per_class"] and mix["n_dropped_missing_image"] == 0
    assert mix["n_corpus"] > mix["n_text_only"] > 0  # the world corpus: image records and text-only facts


@pytest.mark.slow
def test_demo_results_are_batch_size_and_resume_invariant(demo_run):
    import pandas as pd

    table = pd.read_csv(demo_run / "results/tables/robustness.csv")
    n_models = len(DEMO["tables"]["robustness"]["groups"][0]["models"])
    assert len(table) == n_models * 2 and (table["ours"] == 100.0).all() and (table["n_evaluated"] == 16).all()
    assert "robustness.html" in (demo_run / "results/report/index.html").read_text()


@pytest.mark.slow
def test_demo_dataset_statistics_count_the_manifest(demo_run):
    import pandas as pd

    table = pd.read_csv(demo_run / "results/tables/table7.csv").set_index(["dataset", "metric"])["ours"]
    world = DEMO["worlds"]["shapes"]
    assert table["shapes36", "n_train_images"] == 36 * world["train_per_class"]
    assert table["shapes36", "n_validation_images"] == 36 * world["test_per_class"]
    assert table["shapes36", "n_classes"] == 36 and table["shapes12", "n_classes"] == 12


@pytest.mark.slow
def test_demo_summary_lists_every_paper_table_and_what_is_missing(demo_run):
    html = (demo_run / "results/report/summary.html").read_text()
    for table in ("Table 1", "Table 5", "Table 7", "Table 8", "Table 13"):
        assert table in html
    assert "not in this run&#x27;s configuration" in html or "not in this run's configuration" in html
    assert "by construction" in html and "configured for it" not in html
    # the text's numbers: restated cells, arithmetic on cells (the formula shown) and the reasons of the rest
    assert "The paper&#x27;s text" in html or "The paper's text" in html
    assert "restates Table 1" in html and "(100 - vlm) / (100 - clip)" in html and "compute budget" in html
    assert "summary.html" in (demo_run / "results/report/index.html").read_text()


@pytest.mark.slow
def test_demo_overflowing_closed_world_is_na_like_the_paper(demo_run):
    import pandas as pd

    table = pd.read_csv(demo_run / "results/tables/table1.csv")
    cell = table[(table.model == "tiny-blip2") & (table.dataset == "shapes36") & (table.setting == "closed_world")].iloc[0]
    assert pd.isna(cell.ours) and "context_overflow" in cell.note
    outputs = [json.loads(line) for line in (demo_run / "results/outputs/tiny-llava/shapes12/open_world.jsonl").open()]
    assert {"item", "row", "image", "label", "prompt", "output", "pred", "model_revision"} <= outputs[0].keys()


@pytest.mark.slow
def test_demo_is_complete_after_run(demo_run):
    proc = snakemake("-n", "--configfile", str(DEMO_FILE), workdir=demo_run)
    assert "Nothing to be done" in proc.output


@pytest.mark.slow
def test_editing_one_models_prompt_reruns_only_its_jobs(demo_run, tmp_path):
    config = copy.deepcopy(DEMO)
    config["models"]["tiny-llava"]["template"] = "USER: <image>\n{question} Answer briefly.\nASSISTANT:"
    proc = snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=demo_run)
    jobs = planned_jobs(proc.stdout)
    # every tiny-llava generation made with that template (chain-of-thought uses cot_template, probabilistic
    # inference its loglik template), its features and what is computed from them, and the model fine-tuned on its
    # captions (Table 4); no other model's jobs
    template = DEMO["models"]["tiny-llava"]["template"]
    metas = (demo_run / "results/outputs/tiny-llava").glob("*/*.meta.json")
    expected = [p for p in metas if json.loads(p.read_text()).get("template") == template]
    assert jobs["generate"] == len(expected) + 1 and jobs["finetune"] == 1
    # its features on shapes12 (Tables 3 and 10) and shapes36 (finding 3)
    assert jobs["gather_features"] == 2 and "loglik" not in jobs and "build_tiny_model" not in jobs
    assert not {"clip_zero_shot", "plan_queries", "prepare_split"} & jobs.keys()
    for rule in ("generate", "extract_features", "probe", "correlate_frequency", "finetune"):
        for wildcards in planned_wildcards(proc.stdout, rule):
            assert re.match(r"model=tiny-llava(-caption-shapes12)?(,|$)", wildcards), wildcards


@pytest.mark.slow
def test_comment_edit_reruns_nothing(demo_run, tmp_path):
    text = DEMO_FILE.read_text().replace("seed: 1234", "seed: 1234  # the upstream seed")
    configfile = tmp_path / "config.yaml"
    configfile.write_text("# a comment\n" + text)
    proc = snakemake("-n", "--configfile", str(configfile), workdir=demo_run)
    assert "Nothing to be done" in proc.output


@pytest.mark.slow
def test_changing_the_seed_reruns_plans_and_everything_after(demo_run, tmp_path):
    config = copy.deepcopy(DEMO)
    config["seed"] = 1
    jobs = planned_jobs(snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=demo_run).stdout)
    n_plans = len(list((demo_run / "results/queries").glob("*/*.jsonl")))
    n_outputs = len(list((demo_run / "results/outputs").glob("*/*/*.jsonl")))
    assert jobs["plan_queries"] == n_plans
    # every output again: generation and probabilistic inference gather their shards, CLIP writes its own
    assert jobs["gather_outputs"] + jobs["clip_zero_shot"] + jobs["gather_loglik"] == n_outputs
    assert "build_tiny_model" not in jobs and "prepare_split" not in jobs


@pytest.mark.slow
def test_changing_the_training_threads_retrains_every_model(demo_run, tmp_path):
    """The thread count changes the order of float sums, so it is a parameter of every training job (world models
    and fine-tunes), not the cores Snakemake gives a job: changing it retrains them all and nothing else."""
    config = copy.deepcopy(DEMO)
    config["train_threads"] = 2
    proc = snakemake("-n", "--configfile", write_config(tmp_path, config), workdir=demo_run)
    jobs = planned_jobs(proc.stdout)
    trained = [key for key, model in DEMO["models"].items() if "train" in model]
    n_finetuned = len(list((demo_run / "results/finetune").glob("*/losses.json")))  # the fine-tunes the tables need
    assert jobs["train_world_model"] == len(trained) == 2 and jobs["finetune"] == n_finetuned
    assert not {"build_world", "build_tiny_model", "plan_queries", "prepare_split"} & jobs.keys()
    # the same config on fewer cores than the run had: nothing to redo
    proc = snakemake("-n", "--cores", "1", "--configfile", write_config(tmp_path, DEMO), workdir=demo_run)
    assert "Nothing to be done" in proc.output


@pytest.mark.slow
def test_snakemake_report_lists_the_rendered_pages(demo_run, tmp_path):
    report = tmp_path / "report.html"
    snakemake("--configfile", str(DEMO_FILE), "--report", str(report), workdir=demo_run)
    text = report.read_text(errors="replace")
    assert "Paper tables" in text and "table1.html" in text


def test_snakefiles_are_snakefmt_formatted():
    import subprocess
    import sys
    from pathlib import Path

    snakefmt = Path(sys.executable).parent / "snakefmt"
    proc = subprocess.run([str(snakefmt), "--check", "Snakefile", "rules/"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generation_is_priced_by_typical_answer_length_not_the_cap():
    from snakemake.utils import validate

    from vlmrepro.costs import job_cost

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    wc = {"model": "llava-proj-flowers102", "dataset": "flowers102"}
    finetuned_items, finetuned = job_cost(config, "generate", {**wc, "setting": "finetuned_eval"})  # 1,024-token cap
    base_items, base = job_cost(config, "generate", {**wc, "model": "llava-1.5-7b", "setting": "open_world"})
    assert finetuned_items == base_items and finetuned == pytest.approx(base)  # class names: a few tokens
    _, cot = job_cost(config, "generate", {**wc, "model": "llava-1.5-7b", "setting": "closed_world_cot"})
    assert cot == pytest.approx(base * 200 / 20)


@pytest.mark.slow
def test_demo_generates_the_right_padded_model_under_both_batching_modes(demo_run):
    outputs = demo_run / "results/outputs/tiny-blip2/shapes12"
    upstream = json.loads((outputs / "closed_world.meta.json").read_text())
    fast = json.loads((outputs / "closed_world_fast.meta.json").read_text())
    assert (upstream["batching"], upstream["padding_side"], upstream["batch_sizes_used"]) == ("upstream", "right", [32])
    assert (fast["batching"], fast["padding_side"], fast["checkpoint_padding_side"]) == ("fast", "left", "right")
    rows = [json.loads(line) for line in (outputs / "closed_world.jsonl").read_text().splitlines()]
    assert {r["padding_side"] for r in rows} == {"right"}  # recorded in every row


def test_the_modern_table_runs_only_on_request(tmp_path):
    """`make paper` reproduces the paper alone; requested_tables: [modern] adds the current VLMs' cells and the
    findings checked on them."""
    modern = ("qwen2.5-vl-7b", "qwen3-vl-8b", "internvl3-8b", "llava-onevision-7b", "gemma-3-12b", "smolvlm2-2.2b")
    paper = snakemake("-n", workdir=tmp_path)
    assert not any(f"model={m}" in paper.stdout for m in modern + ("siglip2-so400m-14",))
    proc = snakemake("-n", "--config", "requested_tables=[modern]", workdir=tmp_path)
    for model in modern:
        settings = set(re.findall(rf"wildcards: model={re.escape(model)}, dataset=\w+, setting=(\w+)", proc.stdout))
        # open and closed world (ImageNet's 1,000 names fit these contexts: nothing excluded), K, ImageWikiQA, and
        # probabilistic inference
        assert {"open_world", "closed_world", "k2", "k100", "imagewikiqa", "prob_inference"} <= settings, model
        assert f"model={model}, dataset=imagenet, setting=closed_world" in proc.stdout
    assert planned_jobs(proc.stdout)["build_table"] == planned_jobs(paper.stdout)["build_table"] + 1
    assert "model=siglip2-so400m-14, dataset=imagenet, setting=clip_zero_shot" in proc.stdout


def test_a_requested_table_that_does_not_exist_stops_with_its_name(tmp_path):
    proc = snakemake("-n", "--config", "requested_tables=[modren]", workdir=tmp_path, check=False)
    assert proc.returncode != 0 and "requested_tables: unknown table 'modren'" in proc.output
