"""The benchmark scripts run on the CPU with the tiny models (ratios only) and report what they measure."""

import json
import os
import subprocess
import sys

import pytest

from conftest import DEMO, REPO, snakemake

sys.path.insert(0, str(REPO / "benchmarks"))
from demo_robustness import seeded_config, spread, table  # noqa: E402
from workflow import busy_seconds, job_intervals, overhead_report  # noqa: E402


@pytest.fixture(scope="module")
def gpu_script_on_the_cpu(tmp_path_factory):
    """benchmarks/gpu.sh, the prepared GPU run, end to end with the tiny models on the CPU (its --size tiny mode)."""
    out = tmp_path_factory.mktemp("bench-out")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "OUT": str(out),
           "PYTHON": sys.executable, "BENCH_WORK": str(out / "work")}  # fmt: skip
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--size", "tiny"], capture_output=True,
                          text=True, timeout=900, cwd=REPO, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_gpu_script_prints_versions_and_every_table(gpu_script_on_the_cpu):
    report = (gpu_script_on_the_cpu / "gpu-benchmarks.md").read_text()
    assert "failed" not in report, report[-3000:]
    assert "torch " in report and "transformers " in report and "open_clip " in report
    for title in ("## Open-world generation", "## Probabilistic inference", "## CLIP zero-shot"):
        assert title in report


def test_generation_benchmark_compares_the_two_paths_on_the_same_images(gpu_script_on_the_cpu):
    table = json.loads((gpu_script_on_the_cpu / "generation.json").read_text())
    upstream, dynamic, static = table["rows"]
    assert upstream["name"] == "upstream: HF generate, batch 8, dataset order"
    assert dynamic["name"].endswith("dynamic KV cache") and "static KV cache" in static["name"]
    # fp32 on the CPU: the optimised paths change nothing
    assert dynamic["notes"] == "8/8 outputs identical" and static["notes"].startswith("8/8 outputs identical; ")
    # one static cache, allocated once (one shape for the compiler on a GPU), served both batches of 4
    assert "2 batch(es) served by 1 static cache(s)" in static["notes"]
    assert upstream["rate"] > 0 and dynamic["rate"] > 0 and static["rate"] > 0 and table["size"] == "tiny"
    assert all(row["memory"] > 0 and row["elapsed_s"] > 0 for row in table["rows"])


def test_a_benchmark_killed_mid_run_keeps_the_rows_it_finished(gpu_script_on_the_cpu):
    """A time limit stops a benchmark between rows: the rows timed so far are on stdout and in its JSON."""
    import signal
    import time

    out = gpu_script_on_the_cpu / "killed.json"
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "generation.py"), "--items", "96", "--device",
                             "cpu", "--work", str(gpu_script_on_the_cpu / "work"), "--json", str(out)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out.exists() and json.loads(out.read_text())["rows"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # what timeout's KILL would do, between the first row and the last
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    rows = json.loads(out.read_text())["rows"]
    assert 1 <= len(rows) < 3 and rows[0]["name"] == "upstream: HF generate, batch 8, dataset order"
    assert f"| {rows[0]['name']} |" in stdout


def test_loglik_benchmark_scores_equal_and_faster_over_several_images(gpu_script_on_the_cpu):
    table = json.loads((gpu_script_on_the_cpu / "loglik.json").read_text())
    upstream, ours = table["rows"]
    assert "(3 images)" in ours["name"] and "(2 images)" in upstream["name"]
    difference = float(ours["notes"].split("max |score difference| ")[1].split()[0])
    assert difference < 1e-3
    assert ours["rate"] > 3 * upstream["rate"]  # one pass per chunk against ~4 single-token steps per class


def test_clip_benchmark_predictions_identical(gpu_script_on_the_cpu):
    table = json.loads((gpu_script_on_the_cpu / "clip.json").read_text())
    assert table["rows"][1]["notes"] == "8/8 predictions identical"


def test_full_size_refuses_a_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "loglik.py"), "--size", "full", "--device",
                           "cpu"], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 2 and "needs a GPU" in proc.stderr


def test_busy_time_is_the_union_of_job_intervals():
    jobs = [{"rule": "a", "start": 0, "end": 4}, {"rule": "b", "start": 1, "end": 3}, {"rule": "a", "start": 6, "end": 7}]
    assert busy_seconds(jobs) == 5
    report = overhead_report(10.0, jobs)
    assert report["overhead_s"] == 5.0 and report["overhead_pct"] == 50.0 and report["top_rules"][0] == ("a", 5)


@pytest.mark.slow
def test_demo_overhead_from_snakemake_job_records(demo_run):
    intervals = job_intervals(demo_run)
    wall = float((demo_run / "wall_seconds").read_text())
    report = overhead_report(wall, intervals)
    assert len(intervals) > 100 and {"generate", "build_table", "render_notebook", "report_index"} <= {j["rule"] for j in intervals}
    assert 0 < report["busy_s"] <= wall and report["job_seconds"] >= report["busy_s"]


def test_dry_run_benchmark_plans_the_whole_paper(tmp_path):
    out = tmp_path / "dry.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "workflow.py"), "--json", str(out), "dry-run"],
                   check=True, cwd=REPO, capture_output=True)  # fmt: skip
    report = json.loads(out.read_text())
    assert int(report["jobs"]) > 1000 and report["seconds"] > 0


def test_robustness_study_shifts_every_training_seed():
    before = json.dumps(DEMO)
    config = seeded_config(DEMO, 3, 2)
    assert json.dumps(DEMO) == before  # the demo config itself is left as it was
    assert config["train_threads"] == 2 and config["worlds"]["shapes"]["seed"] == DEMO["worlds"]["shapes"]["seed"] + 3
    assert all(m["train"]["seed"] == DEMO["models"][k]["train"].get("seed", 0) + 3
               for k, m in config["models"].items() if "train" in m)  # fmt: skip
    assert {r["seed"] for r in config["finetunes"].values()} == {42 + 3}
    assert {s["probe_seed"] for s in config["settings"].values() if s["kind"] == "probe"} == {3}


@pytest.mark.slow
def test_robustness_study_seed_zero_on_one_thread_is_the_demo(demo_run, tmp_path):
    import yaml

    configfile = tmp_path / "seed0.yaml"
    configfile.write_text(yaml.safe_dump(seeded_config(DEMO, 0, 1), sort_keys=False))
    assert "Nothing to be done" in snakemake("-n", "--configfile", str(configfile), workdir=demo_run).output


def test_robustness_table_takes_each_checks_minimum_over_runs():
    def run(mix, holds):
        check = {"check": "mix > base by >= 5", "measured": mix, "required": 5, "holds": holds}
        return [{"finding": "6", "checks": [check]}]

    rows, markdown = table({"seed0-threads1": run(12.0, True), "seed1-threads1": run(4.0, False)})
    assert rows == [{"finding": "6", "check": "mix > base by >= 5", "values": [12.0, 4.0], "min": 4.0, "required": 5,
                     "holds_everywhere": False}]  # fmt: skip
    assert "| 6 | mix > base by >= 5 | 12.0 | 4.0 | 4.0 | 5.0 | **no** |" in markdown


def test_robustness_spread_lists_each_score_once_with_its_range():
    def run(base):
        checks = [{"scores": {"tiny-llava imagewikiqa accuracy": base, "mix imagewikiqa accuracy": 70.0}},
                  {"scores": {"tiny-llava imagewikiqa accuracy": base}}]  # fmt: skip
        return [{"finding": "6", "checks": checks}]

    markdown = spread({"a": run(60.0), "b": run(64.5)})
    assert "| tiny-llava imagewikiqa accuracy | 60.0 | 64.5 | 60.0 to 64.5 |" in markdown
    assert markdown.count("tiny-llava imagewikiqa") == 1 and "| mix imagewikiqa accuracy | 70.0 | 70.0 |" in markdown


def test_robustness_spread_keeps_columns_when_a_run_lacks_a_score():
    full = [{"finding": "6", "checks": [{"scores": {"base": 60.0, "mix": 70.0}}]}]
    partial = [{"finding": "6", "checks": [{"scores": {"mix": 72.0}}]}]
    markdown = spread({"a": partial, "b": full})
    assert "| base |  | 60.0 | 60.0 to 60.0 |" in markdown and "| mix | 72.0 | 70.0 | 70.0 to 72.0 |" in markdown
