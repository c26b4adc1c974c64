"""The paper's evaluation loops as upstream wrote them (yuhui-zh15/VLMClassifier: main_results/main.py,
imagewikiqa/main.py, inference_analysis/main.py, feature_analysis/extract_feature.py), rewritten plainly for the
differential check and run under upstream's own stack (.venv-oracle: Python 3.10, torch 2.2.2, transformers 4.40).

    python upstream.py JOBS.json

JOBS.json is a list of jobs ({"kind", "arch", "checkpoint", "out", ...}, written by benchmarks/oracle/run.py); each
writes one JSON Lines file, one row per item in upstream's order. Nothing of the project is imported: only what
upstream imported. Dispatch by model family and the prompts are upstream's, keyed by the architecture's name.
"""

import json
import os
import random
import sys
import time

import torch
import transformers as tf
from PIL import Image

LOADERS = {
    "llava": (tf.AutoProcessor, tf.LlavaForConditionalGeneration),
    "llava_next": (tf.LlavaNextProcessor, tf.LlavaNextForConditionalGeneration),
    "blip2": (tf.Blip2Processor, tf.Blip2ForConditionalGeneration),
    "instructblip": (tf.InstructBlipProcessor, tf.InstructBlipForConditionalGeneration),
}
VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions."
)
_loaded = {}


def load(job):
    """The processor and model of a checkpoint, as upstream loaded them (float32 here: on a CPU, as our stack)."""
    key = job["checkpoint"]
    if key not in _loaded:
        processor_class, model_class = LOADERS[job["family"]]
        _loaded.clear()
        _loaded[key] = (processor_class.from_pretrained(key), model_class.from_pretrained(key).eval())
    return _loaded[key]


def prompt(job, question: str, cot: bool) -> str:
    """upstream's prompt of each model (dispatch on the model id there, on the architecture here)."""
    step = " Let's think step by step."
    if job["arch"] == "llava-v1.6-mistral-7b":
        return f"[INST] <image>\n{question}[/INST]" + (step if cot else "")
    if job["arch"] == "llava-v1.6-vicuna-7b":
        return f"{VICUNA_SYSTEM} USER: <image>\n{question} ASSISTANT:" + (step if cot else "")
    if job["family"] in ("blip2", "instructblip"):
        return f"Question: {question}{step if cot else ''} Answer:"
    return f"USER: <image>\n{question}\nASSISTANT:" + (step if cot else "")


def answer(job, text: str) -> str:
    marker = "[/INST]" if "mistral" in job["arch"] else "Answer:" if "blip" in job["family"] else "ASSISTANT:"
    return text.split(marker)[-1].strip()


def split_rows(job):
    data = [json.loads(line) for line in open(job["manifest"])]
    return [item for item in data if item["split"] == job["split"]] if "split" in job else data


def generate(job, batch, questions):
    processor, model = load(job)
    images = [Image.open(item["image"]) for item in batch]
    prompts = [prompt(job, q, job.get("chain_of_thought", False)) for q in questions]
    inputs = processor(text=prompts, images=images, padding=True, return_tensors="pt")
    for item, p, ids, keep in zip(batch, prompts, inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()):
        item.update(prompt=p, prompt_ids=[t for t, m in zip(ids, keep) if m])
    try:
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=job["max_new_tokens"])
    except RuntimeError as error:  # a prompt beyond a position table (InstructBLIP's Q-Former): the run crashed
        for item in batch:
            item.update(output=None, generation=None, pred=None, error=str(error).splitlines()[0])
        return
    texts = processor.batch_decode(output, skip_special_tokens=True)
    new = output
    if output.shape[1] >= inputs["input_ids"].shape[1] and torch.equal(output[:, : inputs["input_ids"].shape[1]], inputs["input_ids"]):
        new = output[:, inputs["input_ids"].shape[1] :]  # decoder-only models return the prompt first; BLIP's do not
    for item, text, generation in zip(batch, texts, processor.batch_decode(new, skip_special_tokens=True)):
        item.update(output=text, generation=generation, pred=answer(job, text))


def classify(job, out):
    """main_results/main.py (method vlm): shuffle, then per batch the candidates of each item from one stream."""
    data = split_rows(job)
    random.seed(job["seed"])
    random.shuffle(data)
    classes = json.load(open(job["classes"]))
    question = job.get("question", "What type of object is in this photo?")
    for i in range(0, len(data), job["batch_size"]):
        batch = data[i : i + job["batch_size"]]
        if job["n_labels"]:
            choices = []
            for item in batch:
                if job["fixed_order"]:
                    choices.append(classes)
                else:
                    others = random.sample(sorted(set(classes) - {item["label"]}), job["n_labels"] - 1)
                    shuffled = [item["label"]] + others
                    random.shuffle(shuffled)
                    choices.append(shuffled)
            questions = [f"{question} Choose one from \"{', '.join(c)}\"." for c in choices]
        else:
            questions = [question] * len(batch)
        generate(job, batch, questions)
        for item in batch:
            out.write(json.dumps(item) + "\n")


def imagewikiqa(job, out):
    """imagewikiqa/main.py: every question in file order, chain of thought."""
    data = [json.loads(line) for line in open(job["manifest"])]
    for i in range(0, len(data), job["batch_size"]):
        batch = data[i : i + job["batch_size"]]
        generate(job, batch, [item["text"] for item in batch])
        for item in batch:
            out.write(json.dumps(item) + "\n")


def class_logprobs_cached(job, image_file, classes, context):
    """inference_analysis/main.py process_image: the context once, then each class token by token over its cache
    (transformers 4.40 returns the cache as tuples, so every class starts from the context)."""
    processor, model = load(job)
    with torch.no_grad():
        first_inputs = processor(text=context, images=Image.open(image_file), return_tensors="pt")
        first = model(**first_inputs, use_cache=True)
        scores = []
        for name in classes:
            ids = processor(text=name).input_ids[0, 1:].tolist()
            outputs, past = first, first.past_key_values
            scores.append([])
            for token in ids:
                scores[-1].append(torch.log_softmax(outputs.logits[0, -1, :], dim=-1)[token].item())
                outputs = model(
                    input_ids=torch.tensor([[token]]),
                    pixel_values=first_inputs["pixel_values"],
                    attention_mask=first_inputs["attention_mask"],
                    past_key_values=past,
                    use_cache=True,
                )
                past = outputs.past_key_values
    return scores


def class_logprobs_full(job, image_file, classes, context):
    """inference_analysis/main.py process_image_raw: one forward over context + class for every class."""
    processor, model = load(job)
    scores = []
    with torch.no_grad():
        image = Image.open(image_file)
        for name in classes:
            inputs = processor(text=f"{context} {name}", images=image, return_tensors="pt")
            logits = model(**inputs).logits
            ids = torch.tensor(processor(text=name)["input_ids"][1:])
            selected = torch.log_softmax(logits[0, -len(ids) - 1 : -1, :], dim=-1)
            scores.append(torch.gather(selected, 1, ids.unsqueeze(1)).squeeze(1).float().tolist())
    return scores


def loglik(job, out):
    data = split_rows(job)
    random.seed(job["seed"])
    random.shuffle(data)
    classes = json.load(open(job["classes"]))
    data = data[: job.get("limit", 1000)]
    score = class_logprobs_full if job["family"] in ("blip2", "instructblip") else class_logprobs_cached
    for item in data:
        item["label_index"] = classes.index(item["label"])
        item["probs"] = score(job, item["image"], classes, job["context"])
        out.write(json.dumps(item) + "\n")


def features(job, out):
    """feature_analysis/extract_feature.py: the last layer's last-token and mean hidden state of every item."""
    processor, model = load(job)
    data = [json.loads(line) for line in open(job["manifest"])]
    random.seed(job["seed"])
    random.shuffle(data)
    question = "What type of object is in this photo?"
    for i in range(0, len(data), job["batch_size"]):
        batch = data[i : i + job["batch_size"]]
        images = [Image.open(item["image"]) for item in batch]
        inputs = processor(text=[prompt(job, question, False)] * len(batch), images=images, padding=True, return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**inputs, output_hidden_states=True)
            if job["family"] in ("blip2", "instructblip"):
                outputs = outputs.language_model_outputs
            hidden = outputs.hidden_states[-1]
        for item, last, mean in zip(batch, hidden[:, -1, :], hidden.mean(dim=1)):
            item.update(last=last.tolist(), avg=mean.tolist())
            out.write(json.dumps(item) + "\n")


def clip_zero_shot(job, out):
    """main_results/main.py (method clip) through open_clip of the paper's time: argmax over every class, or over
    each item's candidates drawn from the one stream."""
    import open_clip
    import torch.nn.functional as F

    config = json.load(open(f"{job['checkpoint']}/open_clip_config.json"))
    open_clip.factory._MODEL_CONFIGS["oracle-clip"] = config["model_cfg"]
    model, _, preprocess = open_clip.create_model_and_transforms(
        "oracle-clip",
        pretrained=f"{job['checkpoint']}/open_clip_pytorch_model.bin",
        image_mean=config["preprocess_cfg"]["mean"],
        image_std=config["preprocess_cfg"]["std"],
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer("oracle-clip")
    data = split_rows(job)
    random.seed(job["seed"])
    random.shuffle(data)
    classes = json.load(open(job["classes"]))
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer([f"A photo of a {c}" for c in classes])), dim=-1)
    for i in range(0, len(data), job["batch_size"]):
        batch = data[i : i + job["batch_size"]]
        pixels = torch.cat([preprocess(Image.open(item["image"]).convert("RGB")).unsqueeze(0) for item in batch])
        choices = None
        if job["n_labels"]:
            choices = []
            for item in batch:
                others = random.sample(sorted(set(classes) - {item["label"]}), job["n_labels"] - 1)
                shuffled = [item["label"]] + others
                random.shuffle(shuffled)
                choices.append([classes.index(c) for c in shuffled])
        with torch.no_grad():
            similarities = F.normalize(model.encode_image(pixels), dim=-1) @ text.T
        for k, item in enumerate(batch):
            if choices:
                pred = classes[choices[k][similarities[k][choices[k]].argmax().item()]]
            else:
                pred = classes[similarities[k].argmax().item()]
            item.update(pred=pred, choices=[classes[c] for c in choices[k]] if choices else None)
            out.write(json.dumps(item) + "\n")


KINDS = {"classify": classify, "imagewikiqa": imagewikiqa, "loglik": loglik, "features": features, "clip": clip_zero_shot}


def versions() -> dict:
    import importlib.metadata as md

    names = ("torch", "transformers", "tokenizers", "open_clip_torch", "numpy", "pillow")
    return {"python": sys.version.split()[0], **{n: md.version(n) for n in names}}


def main(jobs_file: str) -> None:
    torch.set_num_threads(1)  # the same float sums in every run, whatever the machine
    jobs = json.load(open(jobs_file))
    for job in jobs:
        start = time.time()
        with open(job["out"] + ".part", "w") as out:
            KINDS[job["kind"]](job, out)
        os.replace(job["out"] + ".part", job["out"])
        print(f"{job['arch']} {job['name']}: {time.time() - start:.1f} s", flush=True)
    json.dump(versions(), open(jobs_file + ".versions.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1])
