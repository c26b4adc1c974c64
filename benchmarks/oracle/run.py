"""The differential check (make oracle): the paper's loops under upstream's own stack against this workflow's
rules under its pinned stack, on the same tiny checkpoints and images, answer for answer.

1. Real tokenizers (vlmrepro/data/reference_files.yaml), tiny random-weight checkpoints of the paper's architectures
   written by transformers 4.40 in their paper-era hub layout (checkpoints.py, in .venv-oracle), an open_clip ViT,
   and small datasets shaped like the paper's (Caltech101's 101+ classes, StanfordCars' long names, ImageWikiQA's
   four-choice questions), made here.
2. upstream.py runs upstream's loops on them in .venv-oracle (Python 3.10, torch 2.2.2, transformers 4.40).
3. Snakemake runs this workflow's own rules on them: config.yaml's models, settings and batching, with the weights
   from the checkpoints (models.<m>.local) and the datasets swapped in.
4. Row by row comparison, written to benchmarks/ORACLE.md; exit 1 when a difference has no named cause.

    python benchmarks/oracle/run.py [--workdir oracle-run] [--oracle-python .venv-oracle/bin/python] [--report F]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from vlmrepro.reference_files import ensure_reference_files  # noqa: E402

# oracle checkpoint (checkpoints.py) -> config.yaml model whose templates, batching and settings our side runs
MODELS = {
    "llava-1.5-7b": "llava-1.5-7b",
    "llava-v1.6-vicuna-7b": "llava-next-vicuna-7b",
    "llava-v1.6-mistral-7b": "llava-next-mistral-7b",
    "blip2-opt-2.7b": "blip2-opt-2.7b",
    "instructblip-vicuna-7b": "instructblip-vicuna-7b",
    "clip-vit-l-14-336": "clip-vit-l-14-336",
}
CLIP = "clip-vit-l-14-336"
# the setting families of the paper, per dataset (config.yaml's setting names); upstream never ran chain of thought
# on LLaVA-NeXT (its main.py asserts against it)
GENERATION = {
    "caltech101": ["open_world", "closed_world", "closed_world_fixed", "closed_world_cot", "k2", "k100"],
    "stanford_cars": ["closed_world_fixed"],  # batches of 4 there
    "imagewikiqa": ["imagewikiqa"],
}
NO_COT = ("llava-v1.6-vicuna-7b", "llava-v1.6-mistral-7b")
LOGLIK = {"caltech101": ["prob_inference"]}  # every model with a loglik entry in config.yaml
FEATURES = {"caltech101": ["features"]}  # the models upstream extracted features of
FEATURE_MODELS = ("llava-1.5-7b", "blip2-opt-2.7b")
CLIP_SETTINGS = {"caltech101": ["clip_zero_shot", "clip_k2"]}
# a random tiny model never ends a generation early: long budgets are capped (both sides run the same cap)
MAX_NEW_TOKENS = 96

# Differences with a known cause: (checkpoint, setting) -> the cause, as docs/protocol.md's deviations table lists it.
# A difference not listed here fails the check.
KNOWN = {}

WORDS = (
    "accordion airplane anchor ant barrel bass beaver binocular bonsai brain brontosaurus buddha butterfly camera "
    "cannon car_side ceiling_fan cellphone chair chandelier cougar_body cougar_face crab crayfish crocodile "
    "crocodile_head cup dalmatian dollar_bill dolphin dragonfly electric_guitar elephant emu euphonium ewer faces "
    "ferry flamingo flamingo_head garfield gerenuk gramophone grand_piano hawksbill headphone hedgehog helicopter ibis "
    "inline_skate joshua_tree kangaroo ketch lamp laptop leopards llama lobster lotus mandolin mayfly menorah "
    "metronome minaret motorbikes nautilus octopus okapi pagoda panda pigeon pizza platypus pyramid revolver rhino "
    "rooster saxophone schooner scissors scorpion sea_horse snoopy soccer_ball stapler starfish stegosaurus "
    "stop_sign strawberry sunflower tick trilobite umbrella watch water_lilly wheelchair wild_cat windsor_chair "
    "wrench yin_yang background_google tortoise walrus zebra quokka axolotl narwhal tapir"
).split()
MAKES = ["AM General Hummer", "Acura TL", "Aston Martin V8 Vantage", "Audi S5", "BMW M3", "Bentley Continental",
         "Chevrolet Silverado 1500", "Dodge Ram Pickup 3500", "Ford F-150", "Hyundai Veloster", "Jeep Grand Cherokee",
         "Mercedes-Benz Sprinter Van", "Rolls-Royce Phantom Drophead Coupe"]  # fmt: skip
BODIES = ["SUV", "Sedan", "Coupe", "Convertible", "Hatchback", "Crew Cab", "Wagon", "Type-S"]


def caltech_classes() -> list[str]:
    return [w.replace("_", " ") for w in WORDS[:110]]


def cars_classes() -> list[str]:
    return [f"{make} {body} {2007 + (i % 6)}" for i, (make, body) in
            enumerate((m, b) for m in MAKES for b in BODIES)][:104]  # fmt: skip


def make_data(root: Path) -> dict:
    """Images (varied sizes: LLaVA-NeXT's tiling depends on them) and the manifests, class lists and questions."""
    from PIL import Image

    rng = np.random.default_rng(0)
    datasets = {"caltech101": (caltech_classes(), 12), "stanford_cars": (cars_classes(), 8)}
    sizes = [(48, 40), (40, 64), (96, 32), (33, 33), (70, 50), (32, 90)]
    out = {}
    for name, (classes, n) in datasets.items():
        folder = root / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i:03d}.jpg", quality=90)
            label = classes[int(rng.integers(len(classes)))]
            rows.append({"image": f"./data/{name}/{name}_{i:03d}.jpg", "label": label, "split": "test"})
        write_jsonl(root / f"{name}.jsonl", rows)
        (root / f"{name}_classes.json").write_text(json.dumps(classes))
        out[name] = rows
    questions = []
    for i, row in enumerate(out["caltech101"][:8]):
        name = row["label"]
        options = [f"It {verb} near water" for verb in ("lives", "sleeps", "hunts", "rests")]
        text = "\n".join([f"Where is this object usually found?", *(f"{l}. {o}" for l, o in zip("ABCD", options)),
                          "Choose A, B, C, or D."])  # fmt: skip
        questions.append({"image": f"images/{Path(row['image']).name}", "text": text, "label": "ABCD"[i % 4],
                          "wiki": f"The {name} is found near water.", "classname": name})  # fmt: skip
    write_jsonl(root / "imagewikiqa.jsonl", questions)
    # upstream opens the questions' images from the working directory: its own copy of the file with those paths
    write_jsonl(root / "imagewikiqa_upstream.jsonl", [
        {**q, "image": f"./data/caltech101/{Path(q['image']).name}"} for q in questions])  # fmt: skip
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# --- our side: config.yaml's models and settings on the oracle's checkpoints and data ---------------------------


def our_config(root: Path, checkpoints: Path) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    ours = copy.deepcopy(config)
    ours["device"] = "cpu"
    ours["models"] = {}
    for checkpoint, model in MODELS.items():
        entry = {k: v for k, v in config["models"][model].items() if k != "hub"}
        ours["models"][model] = {**entry, "local": {"path": str(checkpoints / checkpoint)}}
        if entry["family"] != "open_clip":  # upstream's batches for every model: the target is answer for answer
            ours["models"][model]["batching"] = "upstream"
    for setting in ours["settings"].values():
        if setting.get("max_new_tokens", 0) > MAX_NEW_TOKENS:
            setting["max_new_tokens"] = MAX_NEW_TOKENS
    datasets = {}
    for name in ("caltech101", "stanford_cars"):
        manifest, classes = root / f"{name}.jsonl", root / f"{name}_classes.json"
        datasets[name] = {
            "paper_key": name,
            "eval_split": "test",
            "sizes": {"test": len(read_jsonl(manifest))},
            "manifest": {"url": manifest.as_uri(), "checksum": sha256(manifest)},
            "classes": {"url": classes.as_uri(), "checksum": sha256(classes)},
            "images": {"prefix": f"./data/{name}/", "directory": str(root / "data" / name)},
        }
    questions = root / "imagewikiqa.jsonl"
    datasets["imagewikiqa"] = {
        "paper_key": "imagewikiqa",
        "eval_split": "test",
        "sizes": {"test": len(read_jsonl(questions))},
        "mcq": {"url": questions.as_uri(), "checksum": sha256(questions), "images_from": "caltech101",
                "images_subdir": "."},  # fmt: skip
    }
    ours["datasets"] = datasets
    ours["finetunes"] = {}
    ours["tables"] = {}
    ours["requested_tables"] = []
    ours["report"]["findings"] = []
    return ours


def cells() -> list[tuple[str, str, str, str]]:
    """(checkpoint, dataset, setting, kind) of every comparison."""
    out = []
    for checkpoint in MODELS:
        if checkpoint == CLIP:
            out += [(checkpoint, d, s, "clip") for d, ss in CLIP_SETTINGS.items() for s in ss]
            continue
        for dataset, settings in GENERATION.items():
            for setting in settings:
                if not (setting == "closed_world_cot" and checkpoint in NO_COT):
                    out.append((checkpoint, dataset, setting, "imagewikiqa" if dataset == "imagewikiqa" else "classify"))
        out += [(checkpoint, d, s, "loglik") for d, ss in LOGLIK.items() for s in ss if has_loglik(checkpoint)]
        if checkpoint in FEATURE_MODELS:
            out += [(checkpoint, d, s, "features") for d, ss in FEATURES.items() for s in ss]
    return out


def has_loglik(checkpoint: str) -> bool:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return "loglik" in config["models"][MODELS[checkpoint]]


def targets(cell) -> list[str]:
    checkpoint, dataset, setting, kind = cell
    model = MODELS[checkpoint]
    if kind == "features":
        return [f"results/features/{model}/{dataset}/{setting}"]
    out = [f"results/outputs/{model}/{dataset}/{setting}.jsonl"]
    return out + ([f"results/outputs/{model}/{dataset}/{setting}.npz"] if kind == "loglik" else [])


def run_ours(work: Path, configfile: Path, cells_: list, log) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    wanted = [t for c in cells_ for t in targets(c)]
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", str(configfile), "--profile", str(REPO / "profiles" / "local"), "--cores", "2", *wanted]  # fmt: skip
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (work / "snakemake.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"our workflow failed (rc {proc.returncode}); see {work / 'snakemake.log'}:\n{proc.stderr[-3000:]}")
    log(f"our rules: {time.time() - start:.0f} s")
    return time.time() - start


# --- upstream's side ------------------------------------------------------------------------------------------------


def upstream_jobs(root: Path, checkpoints: Path, ours: dict) -> list[dict]:
    jobs = []
    for cell in cells():
        checkpoint, dataset, setting, kind = cell
        model = ours["models"][MODELS[checkpoint]]
        s = ours["settings"][setting]
        job = {
            "name": f"{dataset}/{setting}",
            "kind": kind,
            "arch": checkpoint,
            "family": model["family"],
            "checkpoint": str(checkpoints / checkpoint),
            "seed": ours["seed"],
            "out": str(root / "upstream" / checkpoint / dataset / f"{setting}.jsonl"),
        }
        if dataset == "imagewikiqa":
            job |= {"manifest": str(root / "imagewikiqa_upstream.jsonl")}
        else:
            job |= {"manifest": str(root / f"{dataset}.jsonl"), "classes": str(root / f"{dataset}_classes.json"),
                    "split": "test"}  # fmt: skip
        n_classes = len(json.loads((root / f"{dataset}_classes.json").read_text())) if dataset != "imagewikiqa" else 0
        candidates = s.get("candidates", "none")
        if kind in ("classify", "imagewikiqa"):
            by_dataset = s.get("upstream_batch_size_by_dataset", {})
            job |= {
                "batch_size": min(by_dataset.get(dataset, 8), model.get("upstream_batch_size", 8)),
                "max_new_tokens": s["max_new_tokens"],
                "chain_of_thought": s.get("chain_of_thought", False),
                "n_labels": {"none": None, "all": n_classes}.get(candidates, candidates),
                "fixed_order": s.get("order") == "fixed",
            }
        elif kind == "loglik":
            job |= {"context": model["loglik"]["template"].split(" {label}")[0].replace("{question}", s["question"]),
                    "limit": s.get("limit") or 1000}  # fmt: skip
        elif kind == "features":
            job |= {"batch_size": s.get("batch_size") or 16}
        elif kind == "clip":
            job |= {"batch_size": 32, "n_labels": None if candidates in (None, "none") else candidates}
        Path(job["out"]).parent.mkdir(parents=True, exist_ok=True)
        jobs.append(job)
    return jobs


def start_upstream(root: Path, python: str, jobs: list[dict]) -> tuple[subprocess.Popen, float]:
    """upstream's loops in the background (one thread: they and our rules share the machine's cores)."""
    jobs_file = root / "upstream_jobs.json"
    jobs_file.write_text(json.dumps(jobs, indent=1))
    log_file = open(root / "upstream.log", "w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    process = subprocess.Popen([python, str(HERE / "upstream.py"), str(jobs_file)], cwd=root, stdout=log_file,
                               stderr=subprocess.STDOUT, env=env)  # fmt: skip
    return process, time.time()


def finish_upstream(root: Path, started: tuple[subprocess.Popen, float], log) -> tuple[dict, float]:
    process, start = started
    if process.wait():
        tail = (root / "upstream.log").read_text()[-3000:]
        raise SystemExit(f"upstream's loops failed (rc {process.returncode}); see {root / 'upstream.log'}:\n{tail}")
    seconds = time.time() - start
    log(f"upstream's loops: {seconds:.0f} s")
    return json.loads((root / "upstream_jobs.json.versions.json").read_text()), seconds


# --- comparison -----------------------------------------------------------------------------------------------------


def compare(cell, root: Path, work: Path) -> dict:
    checkpoint, dataset, setting, kind = cell
    model = MODELS[checkpoint]
    upstream = read_jsonl(root / "upstream" / checkpoint / dataset / f"{setting}.jsonl")
    if kind == "features":
        return compare_features(upstream, work / targets(cell)[0])
    ours = read_jsonl(work / targets(cell)[0])
    result = {"items": len(upstream)}
    if len(ours) != len(upstream) or any(Path(o["image"]).name != Path(u["image"]).name for o, u in zip(ours, upstream)):
        return result | {"error": f"items differ: ours {len(ours)}, upstream {len(upstream)}, or in another order"}
    if kind == "loglik":
        return result | compare_loglik(upstream, ours, work / targets(cell)[1])
    first = None
    same_pred = same_text = 0
    for k, (o, u) in enumerate(zip(ours, upstream)):
        same_pred += o.get("pred") == u["pred"]  # None on both sides: not evaluable (ours) where upstream crashed
        if kind != "clip":  # the generated text (transformers 4.40's BLIP-2 returned no prompt tokens)
            same_text += (o.get("generation") or "").strip() == (u.get("generation") or "").strip()
        if o.get("pred") != u["pred"] and first is None:
            first = {"item": k, "ours": o.get("pred", o.get("status")), "upstream": u["pred"]}
    result |= {"same_pred": same_pred, "first": first}
    if kind != "clip":
        folder = root / "data" / ("caltech101" if dataset == "imagewikiqa" else dataset)  # ImageWikiQA asks about those
        paths = [folder / Path(o["image"]).name for o in ours]
        ids = our_prompt_ids(checkpoint, work / "models" / model, [o["prompt"] for o in ours], paths)
        same_ids = [mine == u["prompt_ids"] for mine, u in zip(ids, upstream) if u.get("prompt_ids") is not None]
        result["same_text"] = same_text
        result["same_prompt"] = f"{sum(same_ids)}/{len(same_ids)}"
        result["not_evaluable"] = (sum(o["status"] != "ok" for o in ours), sum("error" in u for u in upstream))
    return result


_processors = {}


def our_prompt_ids(checkpoint: str, model_dir: Path, prompts: list[str], images: list[str]) -> list[list[int]]:
    """Each prompt as our stack tokenizes it with its image, in upstream's terms: the image placeholder once (4.40's
    LLaVA models expanded it themselves) and no query placeholders (4.40's BLIP-2 models placed the queries)."""
    from PIL import Image

    from vlmrepro.models import VisionLanguageModel

    if checkpoint not in _processors:
        family = read_jsonl_config_family(checkpoint)
        _processors.clear()
        _processors[checkpoint] = VisionLanguageModel(model_dir, family, device="cpu", image_backend="pil")
    vlm = _processors[checkpoint]
    image_id = vlm.config.image_token_index
    out = []
    for prompt, path in zip(prompts, images):
        with Image.open(path) as image:
            ids = vlm.preprocess([image.convert("RGB")], [prompt])["input_ids"][0].tolist()
        out.append([t for k, t in enumerate(ids) if t != image_id or (vlm.family.startswith("llava") and ids[k - 1] != image_id)])
    return out


def read_jsonl_config_family(checkpoint: str) -> str:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return config["models"][MODELS[checkpoint]]["family"]


def compare_loglik(upstream: list[dict], ours: list[dict], npz_file: Path) -> dict:
    with np.load(npz_file) as npz:
        logprobs, offsets = npz["token_logprobs"], npz["class_offsets"]
    worst, same_top = 0.0, 0
    for i, u in enumerate(upstream):
        ours_classes = [logprobs[i, offsets[c] : offsets[c + 1]] for c in range(len(offsets) - 1)]
        lengths_match = [len(a) for a in ours_classes] == [len(p) for p in u["probs"]]
        if not lengths_match:
            return {"error": f"item {i}: class token counts differ"}
        worst = max(worst, max(float(np.max(np.abs(a - np.array(p)))) for a, p in zip(ours_classes, u["probs"])))
        same_top += int(np.argmax([a.sum() for a in ours_classes])) == int(np.argmax([sum(p) for p in u["probs"]]))
    return {"max_abs_logprob": worst, "same_pred": same_top, "first": None}


def compare_features(upstream: list[dict], folder: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from vlmrepro import features

    result = {"items": len(upstream)}
    for position in ("last", "avg"):
        ours = features.load(folder, position)
        if len(ours["features"]) != len(upstream):
            return result | {"error": f"{len(ours['features'])} feature rows, upstream {len(upstream)}"}
        theirs = np.array([u[position] for u in upstream], dtype=np.float32)
        order = np.argsort(ours["item"])
        delta = np.abs(ours["features"][order] - theirs)
        # ours are stored in float16: half a unit in the last place of each value, plus float32 noise
        tolerance = np.abs(theirs) * 2.0**-11 + 1e-4
        result[f"max_abs_{position}"] = float(delta.max())
        result[f"within_{position}"] = bool((delta <= tolerance).all())
    return result


def verdict(cell, result: dict) -> str:
    if "error" in result:
        return "error"
    kind = cell[3]
    if kind == "features":
        return "ok" if result["within_last"] and result["within_avg"] else "differs"
    if kind == "loglik":
        return "ok" if result["max_abs_logprob"] <= LOGLIK_TOLERANCE else "differs"
    exact = result["same_pred"] == result["items"] and result.get("same_text", result["items"]) == result["items"]
    prompts, rows = (int(n) for n in result.get("same_prompt", "0/0").split("/"))
    return "ok" if exact and prompts == rows else "differs"


# float32 on a CPU, two torch versions and two ways of scoring a class (cache reuse against packed classes)
LOGLIK_TOLERANCE = 1e-4


def report(rows: list, versions: dict, timings: dict, path: Path) -> None:
    lines = [
        "# Differential check against upstream's stack (`make oracle`)",
        "",
        "Generated by `benchmarks/oracle/run.py`; do not edit. Upstream's loops (benchmarks/oracle/upstream.py) under "
        "upstream's pinned stack against this workflow's rules under its own, on the same tiny random-weight "
        "checkpoints (written in their paper-era hub layout by transformers 4.40, with the real tokenizers) and the "
        "same images. Each row is one model × dataset × setting of config.yaml.",
        "",
        f"- Upstream's stack: " + ", ".join(f"{k} {v}" for k, v in versions["upstream"].items()),
        f"- Ours: " + ", ".join(f"{k} {v}" for k, v in versions["ours"].items()),
        f"- Run {versions['date']} on {versions['machine']}, side by side: upstream's loops {timings['upstream']:.0f} s, "
        f"our rules {timings['ours']:.0f} s, {timings['total']:.0f} s in all (with the checkpoints and data).",
        f"- Generation budgets above {MAX_NEW_TOKENS} new tokens (chain of thought, ImageWikiQA) are capped at "
        f"{MAX_NEW_TOKENS} on both sides: a random tiny model never ends early.",
        f"- Tolerances: log-likelihoods {LOGLIK_TOLERANCE:g} (float32); features: our float16 storage, half a unit "
        "in the last place of each value, plus 1e-4.",
        "",
        "| model | dataset | setting | items | same prompt tokens | not evaluable (ours / upstream) | same prediction | "
        "same generated text | max abs Δ | first differing item | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, result, status in rows:
        checkpoint, dataset, setting, kind = cell
        n = result.get("items", "")
        delta = ""
        if kind == "loglik":
            delta = f"{result.get('max_abs_logprob', float('nan')):.1e} (log-prob)"
        elif kind == "features":
            delta = f"last {result.get('max_abs_last', float('nan')):.1e}, avg {result.get('max_abs_avg', float('nan')):.1e}"
        first = result.get("first")
        first_text = ""
        if first:
            first_text = f"#{first['item']}: ours `{str(first['ours'])[:40]}` / upstream `{str(first['upstream'])[:40]}`"
        if "error" in result:
            first_text = result["error"]
        cause = KNOWN.get((checkpoint, setting))
        shown = status if status == "ok" or not cause else f"{status}: {cause}"
        na = result.get("not_evaluable")
        lines.append(
            f"| {checkpoint} | {dataset} | {setting} | {n} | {result.get('same_prompt', '')} | "
            f"{f'{na[0]} / {na[1]}' if na else ''} | {result.get('same_pred', '')} | {result.get('same_text', '')} | "
            f"{delta} | {first_text} | {shown} |"
        )
    lines += [
        "",
        "Notes:",
        "",
        "- *Not evaluable*: rows our rules record as `context_overflow` / rows whose batch crashed upstream's run. "
        "InstructBLIP's StanfordCars closed world needs more than its Q-Former's 512 positions: upstream's run "
        "crashed there (the paper's N/A cells), ours records every such item with the reason.",
        "- Prompts are compared in upstream's terms: the image placeholder once (transformers 4.40's LLaVA models "
        "expanded it themselves) and no query placeholders (4.40's BLIP-2 models placed the queries).",
        "- Stand-ins: transformers 4.40.0 for upstream's 4.40.0.dev0, with the tokenizers 0.19.1 it requires "
        "(upstream had 0.15.2); open_clip 2.24 for OpenAI's `clip` package; OPT's tokenizer is GPT-2's BPE, whose "
        "token boundaries are OPT's but whose ids are in GPT-2's order.",
        "- What each difference the check found was, and what the workflow does about it: docs/protocol.md, "
        "\"Differences from upstream's library stack\".",
    ]
    path.write_text("\n".join(lines) + "\n")


def save_pickled_weights(folder: Path) -> None:
    """The weights also as open_clip_pytorch_model.bin, as open_clip's hub repositories carry them beside the
    safetensors file: open_clip 2.24 reads only that one."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "open_clip_model.safetensors"), folder / "open_clip_pytorch_model.bin")


def stack_versions() -> dict:
    import importlib.metadata as md

    names = ("torch", "transformers", "tokenizers", "open_clip_torch", "numpy", "pillow")
    return {"python": platform.python_version(), **{n: md.version(n) for n in names}}


def main() -> int:
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(REPO / "oracle-run"))
    parser.add_argument("--oracle-python", default=str(REPO / ".venv-oracle" / "bin" / "python"))
    parser.add_argument("--report", default=str(REPO / "benchmarks" / "ORACLE.md"))
    args = parser.parse_args()
    args.oracle_python = os.path.abspath(args.oracle_python)  # not resolve(): the venv's link is what makes it the venv
    if not os.path.isfile(args.oracle_python):
        raise SystemExit(f"{args.oracle_python} does not exist: make oracle-venv builds upstream's environment")
    log = lambda message: print(message, flush=True)  # noqa: E731
    root = Path(args.workdir).resolve()
    shutil.rmtree(root, ignore_errors=True)  # every check from scratch: no result or cache of an earlier run
    root.mkdir(parents=True)
    tokenizers = ensure_reference_files() / "tokenizers"
    make_data(root)
    checkpoints = root / "checkpoints"
    subprocess.run([args.oracle_python, str(HERE / "checkpoints.py"), str(tokenizers), str(checkpoints)], check=True,
                   capture_output=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})  # fmt: skip
    from vlmrepro.demo.tiny import build_tiny_clip

    build_tiny_clip(checkpoints / CLIP, {"image_size": 32})
    save_pickled_weights(checkpoints / CLIP)
    ours = our_config(root, checkpoints)
    configfile = root / "config.yaml"
    configfile.write_text(yaml.safe_dump(ours, sort_keys=False))
    timings = {}
    upstream = start_upstream(root, args.oracle_python, upstream_jobs(root, checkpoints, ours))
    timings["ours"] = run_ours(root / "work", configfile, cells(), log)
    versions = {}
    versions["upstream"], timings["upstream"] = finish_upstream(root, upstream, log)
    versions["ours"] = stack_versions()
    versions["date"] = datetime.date.today().isoformat()
    versions["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
    rows = []
    for cell in cells():
        result = compare(cell, root, root / "work")
        rows.append((cell, result, verdict(cell, result)))
    timings["total"] = time.time() - started
    report(rows, versions, timings, Path(args.report))
    unexplained = [c for c, _, status in rows if status != "ok" and (c[0], c[2]) not in KNOWN]
    log(f"{len(rows)} cells, {len(unexplained)} with unexplained differences; report: {args.report}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
