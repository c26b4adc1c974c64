"""A small synthetic world in which the causes the paper names are present, so that tiny models trained in it on a
CPU show the paper's findings (README: "The embedded demo").

* Classes: 6 shape families × 6 colours = 36 classes. Each class has a made-up, non-compositional species name
  ("a red circle" is a *zomil*, "a blue circle" a *kavet*): the name cannot be composed from the colour and shape
  words, so a model must learn every class on its own, as with ImageNet's names. Each family has a generic name
  ("bead" for circles) that captions sometimes use instead of the species name (VLMs' coarse answers).
* Facts: three arbitrary facts per class (where it lives, what it eats, which instrument it plays; four possible
  values each, dealt at random): the stand-in for the Wikipedia facts of ImageWikiQA. They are known only through
  the class name, and every question offers all four values, so answering needs recognition first.
* Images: the family's shape in the class's colour (jittered), at a random position and scale, on a textured
  background (plain, striped, checkered or dotted, random colours) — small (32 px) and deterministic.
* Corpora: an even contrastive corpus (every class equally often) for the CLIP model; a long-tailed VLM corpus
  (LLaVA-format captions and instruction conversations whose class frequencies span over two orders of magnitude,
  balanced over shapes and colours, so frequency is not confounded with how easy a class is to see); a
  "wiki" text corpus (the language model's own knowledge: every class's facts, evenly, not counted as VLM data).
* Evaluation: a classification dataset (balanced train/test splits, upstream manifest rows) and a mini ImageWikiQA
  (4-choice questions about a class's facts that never name it, over the test images).

Everything is a pure function of the ``spec`` (seeded ``random.Random`` / NumPy generators); ``build_world``
writes the images and JSON files under one directory, ``build_world_outputs`` onto the build rule's outputs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..datasets import COLOURS, SHAPES, UPSTREAM_PREFIX, paint_shape

# generic (family) name of each shape: the coarse answer a captioner gives when it does not name the species
FAMILIES = {"circle": "bead", "square": "tile", "triangle": "cone", "diamond": "gem", "cross": "star", "ring": "hoop"}
BACKGROUNDS = ("plain", "striped", "checkered", "dotted")

# relation -> (question about an image that never names the class, fact sentence, values). Four values per
# relation, and every question lists all four: the choices then say nothing about which class is shown, so a
# question is answered only by recognising the object and recalling its fact.
RELATIONS = {
    "home": ("Where does this object live?", "The {name} lives in the {value}.", ["desert", "forest", "marsh", "glacier"]),
    "food": ("What does this object eat?", "The {name} eats {value}.", ["plums", "acorns", "honey", "pebbles"]),
    "music": ("Which instrument does this object play?", "The {name} plays the {value}.", ["harp", "drum", "flute", "cello"]),
}
MCQ_SUFFIX = "Choose A, B, C, or D."
COT = "Let's think step by step."
LETTERS = ["A", "B", "C", "D"]

# LLaVA-1.5's Vicuna v1 system prompt, shortened (the world's fine-tuning recipes use it)
SYSTEM = "A chat between a curious user and an artificial intelligence assistant."
BASE_TEMPLATE = "USER: <image>\n{question}\nASSISTANT:"
VICUNA_TEMPLATE = SYSTEM + " USER: <image>\n{question} ASSISTANT:"
CLASSIFY_QUESTION = "What type of object is in this photo?"
LOGLIK_PREFIX = "The photo features a"

CAPTION_PROMPTS = ["Describe the image briefly.", "Give a short caption for the photo.", "What is shown in this image?"]
CLASSIFY_PROMPTS = [CLASSIFY_QUESTION, "What is the object in the image?", "Name the object in this picture."]
CLIP_CAPTIONS = [
    "A photo of a {name}.",
    "A photo of a {name} on a {bg} background.",
    "A {name}, a kind of {family}.",
    "A {colour} {family} called a {name}.",
]

# The demo's world (demo/config.yaml worlds.shapes): the sizes at which the paper's six findings hold with margin
DEFAULT_SPEC = {
    "seed": 0,
    "image_size": 32,
    "clip_per_class": 100,  # image-caption pairs per class of the (even) CLIP corpus
    "head": 250,  # VLM-corpus image records of the most frequent class
    "tail": 1,  # ... and of the rarest (geometric in between): over two orders of magnitude
    "caption_share": 0.6,  # image records that are captions; the rest split between classification QA and MCQ
    "mcq_share": 0.15,
    "mcq_floor": 1,  # chain-of-thought fact MCQs per class on top of the long tail: every class is seen in that
    # format at least once, so what the fine-tunes teach about recognising it carries over to the questions
    "text_share": 0.1,  # text-only fact conversations per image record of a class (long-tailed too)
    "generic_rate": 0.4,  # captions that give the family name instead of the species name
    "answer_generic_rate": 0.47,  # ... and answers to "what is this?": the name only when the VLM is sure (p > 0.89)
    "wiki_phrasings": 4,  # text-only wiki records per class (even)
    "train_per_class": 60,
    "test_per_class": 8,
    "wikiqa_per_class": 8,  # test images per class and relation in the mini ImageWikiQA
}


# --- classes and facts ------------------------------------------------------------------------------------------


def species_names(n: int = 36, seed: int = 0) -> list[str]:
    """``n`` pronounceable made-up names (consonant first, 5-6 letters), none a substring of another or of any
    other word of the world."""
    rng = random.Random(seed)
    onsets, vowels, codas = "bdfgklmnprstvz", "aeiou", "lmnrstkv"
    reserved = _reserved_words()
    names: list[str] = []
    while len(names) < n:
        name = rng.choice(onsets) + rng.choice(vowels) + rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
        if rng.random() < 0.3:
            name += rng.choice(vowels)
        words = names + reserved
        if any(name in w or w in name for w in words):
            continue
        names.append(name)
    return names


def _reserved_words() -> list[str]:
    text = " ".join(
        [SYSTEM, BASE_TEMPLATE, MCQ_SUFFIX, COT, LOGLIK_PREFIX, *CAPTION_PROMPTS, *CLASSIFY_PROMPTS, *CLIP_CAPTIONS]
        + [q + " " + s for q, s, _ in RELATIONS.values()]
        + [" ".join(v) for _, _, v in RELATIONS.values()]
        + list(FAMILIES.values()) + list(BACKGROUNDS) + list(COLOURS) + list(SHAPES)
        + ["it is a kind of tell me about the background called where does live what eat which play choose from"]
    )
    words = {w.strip(".,?:!\"'{}").lower() for w in text.split()}
    return sorted(w for w in words if len(w) >= 2)


def world_classes(seed: int = 0) -> list[dict]:
    """36 classes ``{"name", "shape", "colour", "family", "facts": {relation: value}}`` in a fixed order
    (shape-major). Fact values are dealt so that each value belongs to nine classes."""
    names = species_names(len(SHAPES) * len(COLOURS), seed)
    rng = random.Random(seed + 1)
    deals = {}
    for relation, (_, _, values) in RELATIONS.items():
        dealt = values * (len(names) // len(values))
        rng.shuffle(dealt)
        deals[relation] = dealt
    classes = []
    for i, (shape, colour) in enumerate((s, c) for s in SHAPES for c in COLOURS):
        classes.append(
            {
                "name": names[i],
                "shape": shape,
                "colour": colour,
                "family": FAMILIES[shape],
                "facts": {relation: deals[relation][i] for relation in RELATIONS},
            }
        )
    _check_distinct(classes)
    return classes


def _check_distinct(classes: list[dict]) -> None:
    """Substring scoring and the MCQ content parser need every name and fact value to be free of the others."""
    values = [v for _, _, vs in RELATIONS.values() for v in vs]
    words = [c["name"] for c in classes] + values + list(FAMILIES.values())
    for a in words:
        for b in words:
            if a != b and a in b:
                raise ValueError(f"world word {a!r} occurs inside {b!r}")
    for value in values:
        for phrase in [*RELATIONS.values()]:
            if value in phrase[1].replace("{value}", "").replace("{name}", "") or value in phrase[0]:
                raise ValueError(f"fact value {value!r} occurs in the question or fact template")


def frequency_ranking(classes: list[dict], seed: int) -> list[str]:
    """Class names from most to least frequent in the VLM corpus, balanced over shapes and colours: a seeded Latin
    square puts one class of every shape and one of every colour in each band of ``len(SHAPES)`` consecutive ranks,
    so frequency is independent of the visual traits that make a class easy or hard to see (a model's accuracy
    can follow frequency only through its training data, and CLIP's cannot follow it by chance through colour or
    shape)."""
    rng = random.Random(seed + 2)
    shapes = list(dict.fromkeys(c["shape"] for c in classes))
    colours = list(dict.fromkeys(c["colour"] for c in classes))
    if len(shapes) != len(colours) or len(classes) != len(shapes) * len(colours):
        raise ValueError(f"a balanced frequency ranking needs as many shapes as colours, got {shapes} x {colours}")
    n = len(shapes)
    rows, cols, bands = (rng.sample(range(n), n) for _ in range(3))
    band = {(s, c): bands[(rows[i] + cols[j]) % n] for i, s in enumerate(shapes) for j, c in enumerate(colours)}
    within = rng.sample(range(len(classes)), len(classes))
    order = sorted(range(len(classes)), key=lambda k: (band[classes[k]["shape"], classes[k]["colour"]], within[k]))
    return [classes[k]["name"] for k in order]


def long_tail_counts(classes: list[dict], spec: dict) -> dict[str, int]:
    """Image records per class in the VLM corpus: ``head`` for the most frequent class, ``tail`` for the rarest, and
    geometrically spaced in between (the classes spread evenly over the orders of magnitude between them)."""
    ranked = frequency_ranking(classes, spec["seed"])
    ratio = spec["tail"] / spec["head"]
    return {name: max(1, round(spec["head"] * ratio ** (r / (len(ranked) - 1)))) for r, name in enumerate(ranked)}


# --- images -----------------------------------------------------------------------------------------------------


def draw_image(cls: dict, size: int, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """(image, background word): the class's shape in its jittered colour on a textured background, drawn at twice
    the size and downsampled (anti-aliased)."""
    big = 2 * size
    base = tuple(int(v) for v in rng.integers(0, 100, size=3))
    other = tuple(int(min(255, v + rng.integers(25, 60))) for v in base)
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    img = Image.new("RGB", (big, big), base)
    draw = ImageDraw.Draw(img)
    step = int(rng.integers(6, 11))
    if background == "striped":
        width = max(2, step // 2)
        if rng.random() < 0.5:
            for x in range(0, big, step):
                draw.rectangle((x, 0, x + width - 1, big), fill=other)
        else:
            for y in range(0, big, step):
                draw.rectangle((0, y, big, y + width - 1), fill=other)
    elif background == "checkered":
        for x in range(0, big, step):
            for y in range(0, big, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=other)
    elif background == "dotted":
        for x in range(step // 2, big, step):
            for y in range(step // 2, big, step):
                draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=other)
    fill = tuple(int(min(255, max(0, c + rng.integers(-30, 31)))) for c in COLOURS[cls["colour"]])
    radius = big * rng.uniform(0.3, 0.42)
    cx = big / 2 + rng.uniform(-0.07, 0.07) * big
    cy = big / 2 + rng.uniform(-0.07, 0.07) * big
    paint_shape(draw, cls["shape"], cx, cy, radius, fill, ring_width=max(3, int(radius / 2.6)), square_scale=0.85,
                bar_divisor=2.8)  # fmt: skip
    return img.resize((size, size), Image.BILINEAR), background


def _write_images(root: Path, folder: str, classes_seq: list[dict], size: int, seed: int) -> list[dict]:
    """Draw one image per entry of ``classes_seq`` into ``root/folder``; returns ``{"file", "cls", "bg"}``."""
    rng = np.random.default_rng(seed)
    (root / folder).mkdir(parents=True, exist_ok=True)
    out = []
    for i, cls in enumerate(classes_seq):
        img, bg = draw_image(cls, size, rng)
        rel = f"{folder}/{folder.replace('/', '_')}_{cls['name']}_{i:05d}.png"
        img.save(root / rel)
        out.append({"file": rel, "cls": cls, "bg": bg})
    return out


# --- corpora ----------------------------------------------------------------------------------------------------


def fact_sentence(cls: dict, relation: str) -> str:
    return RELATIONS[relation][1].format(name=cls["name"], value=cls["facts"][relation])


def mcq(cls: dict, relation: str, rng: random.Random) -> tuple[str, str, list[str]]:
    """(question text with lettered choices, gold letter, choices) of one fact of ``cls``; the text never names
    the class."""
    question, _, values = RELATIONS[relation]
    answer = cls["facts"][relation]
    choices = rng.sample(values, len(values))
    text = "\n".join([question, *(f"{x}. {c}" for x, c in zip(LETTERS, choices)), MCQ_SUFFIX])
    return text, LETTERS[choices.index(answer)], choices


def mcq_answer(cls: dict, relation: str) -> str:
    """The chain-of-thought answer of the corpus' MCQ conversations: recognise the class, then recall the fact."""
    return f"{COT} The photo features a {cls['name']}. {fact_sentence(cls, relation)}"


def clip_corpus(classes: list[dict], root, spec: dict) -> list[dict]:
    """Even contrastive corpus: ``clip_per_class`` images of every class with a caption naming it
    (``{"image": path relative to root, "caption", "label"}``), in a seeded order."""
    rng = random.Random(spec["seed"] + 10)
    seq = [c for c in classes for _ in range(spec["clip_per_class"])]
    rng.shuffle(seq)
    out = []
    for item in _write_images(Path(root), "clip", seq, spec["image_size"], spec["seed"] + 11):
        cls = item["cls"]
        caption = rng.choice(CLIP_CAPTIONS).format(
            name=cls["name"], bg=item["bg"], family=cls["family"], colour=cls["colour"]
        )
        out.append({"image": item["file"], "caption": caption, "label": cls["name"]})
    return out


def _named(cls: dict, rng: random.Random, generic_rate: float) -> str:
    return cls["family"] if rng.random() < generic_rate else cls["name"]


def vlm_corpus(classes: list[dict], root, spec: dict, source: str = "world") -> list[dict]:
    """Long-tailed LLaVA-format records (``{"id", "image"?, "conversations"}``): captions, classification questions
    and chain-of-thought fact MCQs about images, and text-only fact conversations, each class as often as its rank
    in ``long_tail_counts`` says. Image paths are ``<source>/<file>`` (LLaVA's ``image`` field; ``source`` is the
    key of the instruction mix's ``image_roots``)."""
    counts = long_tail_counts(classes, spec)
    by_name = {c["name"]: c for c in classes}
    rng = random.Random(spec["seed"] + 20)
    seq = [by_name[name] for name, n in counts.items() for _ in range(n)]
    rng.shuffle(seq)
    records = []
    for item in _write_images(Path(root), "vlm", seq, spec["image_size"], spec["seed"] + 21):
        cls, u = item["cls"], rng.random()
        if u < spec["caption_share"]:
            human = rng.choice(CAPTION_PROMPTS)
            gpt = f"{LOGLIK_PREFIX} {_named(cls, rng, spec['generic_rate'])} on a {item['bg']} background."
        elif u < 1 - spec["mcq_share"]:
            human = rng.choice(CLASSIFY_PROMPTS)
            name = _named(cls, rng, spec["answer_generic_rate"])
            style = rng.random()  # long, short, or LLaVA-1.5's "single word or phrase" answers
            gpt = f"{LOGLIK_PREFIX} {name}." if style < 0.4 else (f"It is a {name}." if style < 0.7 else name)
        else:
            relation = rng.choice(list(RELATIONS))
            human, _, _ = mcq(cls, relation, rng)
            gpt = mcq_answer(cls, relation)
        records.append(_image_record(len(records), source, item["file"], human, gpt))
    floor = [c for c in classes for _ in range(spec["mcq_floor"])]
    rng.shuffle(floor)
    for item in _write_images(Path(root), "vlmqa", floor, spec["image_size"], spec["seed"] + 22):
        relation = rng.choice(list(RELATIONS))
        human, _, _ = mcq(item["cls"], relation, rng)
        records.append(_image_record(len(records), source, item["file"], human, mcq_answer(item["cls"], relation)))
    for name, n in counts.items():
        cls = by_name[name]
        for _ in range(max(1, int(round(n * spec["text_share"])))):
            relation = rng.choice(list(RELATIONS))
            records.append(
                {
                    "id": f"world-{len(records)}",
                    "conversations": [
                        {"from": "human", "value": _fact_question(cls, relation)},
                        {"from": "gpt", "value": fact_sentence(cls, relation)},
                    ],
                }
            )
    rng.shuffle(records)
    return records


def _image_record(n: int, source: str, file: str, human: str, gpt: str) -> dict:
    return {
        "id": f"world-{n}",
        "image": f"{source}/{file}",
        "conversations": [{"from": "human", "value": "<image>\n" + human}, {"from": "gpt", "value": gpt}],
    }


def _fact_question(cls: dict, relation: str) -> str:
    question = RELATIONS[relation][0]
    return question.replace("this object", f"the {cls['name']}")


def wiki_corpus(classes: list[dict], spec: dict) -> list[dict]:
    """The language model's own knowledge (its "pre-training" text, not VLM data): every class's family and
    facts, ``wiki_phrasings`` text-only conversations per class."""
    rng = random.Random(spec["seed"] + 30)
    records = []
    for cls in classes:
        facts = " ".join(fact_sentence(cls, r) for r in RELATIONS)
        about = f"The {cls['name']} is a kind of {cls['family']}. {facts}"
        qa = [(f"Tell me about the {cls['name']}.", about)]
        qa += [(_fact_question(cls, r), fact_sentence(cls, r)) for r in RELATIONS]
        for k in range(spec["wiki_phrasings"]):
            human, gpt = qa[k % len(qa)]
            records.append(
                {
                    "id": f"wiki-{len(records)}",
                    "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}],
                }
            )
    rng.shuffle(records)
    return records


# --- evaluation data --------------------------------------------------------------------------------------------


def classification_dataset(classes: list[dict], root, spec: dict, name: str = "world") -> list[dict]:
    """Balanced manifest rows (``train_per_class`` / ``test_per_class`` images of each class) in the upstream
    format: ``{"image": "./data/<name>/<file>", "label", "split"}``; images under ``root``."""
    rows = []
    for split, per_class, offset in (("train", spec["train_per_class"], 40), ("test", spec["test_per_class"], 41)):
        seq = [c for c in classes for _ in range(per_class)]
        for item in _write_images(Path(root), split, seq, spec["image_size"], spec["seed"] + offset):
            rows.append({"image": f"{UPSTREAM_PREFIX}{name}/{item['file']}", "label": item["cls"]["name"], "split": split})
    return rows


def wikiqa_questions(classes: list[dict], test_rows: list[dict], spec: dict) -> list[dict]:
    """Mini ImageWikiQA in the released format (``{"image", "text", "label", "classname", "wiki",
    "source_image"}``): every relation of every class over ``wikiqa_per_class`` of its test images; file order
    is seeded."""
    rng = random.Random(spec["seed"] + 50)
    by_class: dict[str, list[dict]] = {}
    for row in test_rows:
        by_class.setdefault(row["label"], []).append(row)
    out = []
    for cls in classes:
        for relation in RELATIONS:
            for row in by_class[cls["name"]][: spec["wikiqa_per_class"]]:
                text, label, _ = mcq(cls, relation, rng)
                out.append(
                    {
                        "image": "images/" + Path(row["image"]).name,
                        "text": text,
                        "label": label,
                        "classname": cls["name"],
                        "wiki": fact_sentence(cls, relation),
                        "source_image": row["image"],
                    }
                )
    rng.shuffle(out)
    return out


def tokenizer_texts(classes: list[dict]) -> list[str]:
    """Every kind of text the world's models read or write, for training the world's tokenizer."""
    texts = [SYSTEM, BASE_TEMPLATE, VICUNA_TEMPLATE, MCQ_SUFFIX, COT, *CAPTION_PROMPTS, *CLASSIFY_PROMPTS,
             "What type of object is in the photo?", 'Choose one from "a, b".', "Generate a caption for the image."]
    for cls in classes:
        texts += [f"{LOGLIK_PREFIX} {cls['name']} on a {bg} background." for bg in BACKGROUNDS]
        texts += [f"It is a {cls['name']}.", f"It is a {cls['family']}.", f"Tell me about the {cls['name']}."]
        texts += [f"The {cls['name']} is a kind of {cls['family']}.", f"The photo features a {cls['family']}."]
        texts += [fact_sentence(cls, r) for r in RELATIONS] + [_fact_question(cls, r) for r in RELATIONS]
    for question, _, values in RELATIONS.values():
        texts += [question] + [f"{x}. {v}" for x, v in zip(LETTERS * 3, values)]
    return texts


def world_tokenizer(classes: list[dict], vocab_size: int = 700):
    """A Llama-style tokenizer (Metaspace BPE with byte fallback, BOS added, ``<image>`` and ``<pad>`` added) trained
    on the world's texts, like ``tiny.llama_tokenizer`` but with merges that never cross a word boundary or join
    punctuation to a word (so a class name continues "… features a" with the same ids it has on its own, whatever
    follows it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    bpe.train_from_iterator(tokenizer_texts(classes) * 3, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    tok = LlamaTokenizer(
        vocab=vocab, merges=merges, unk_token="<unk>", bos_token="<s>", eos_token="</s>", add_prefix_space=True,
        add_bos_token=True, padding_side="left",
    )
    tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    return tok


# --- everything -------------------------------------------------------------------------------------------------


def build_world(out_dir, spec: dict | None = None, name: str = "world") -> dict:
    """Write the world under ``out_dir`` and return its index (also written to ``world.json``):

    * ``images/``: every image (``clip/``, ``vlm/`` and ``vlmqa/`` (the MCQ floor), ``train/``, ``test/``);
    * ``classes.json`` (class names, classification order), ``classes_full.json`` (names, shapes, colours, facts);
    * ``manifest.jsonl`` (classification rows), ``wikiqa.jsonl`` (mini ImageWikiQA), ``clip_corpus.jsonl``,
      ``vlm_corpus.json`` (LLaVA format), ``wiki_corpus.json``, ``counts.json`` (image records per class).
    """
    spec = {**DEFAULT_SPEC, **(spec or {})}
    out = Path(out_dir)
    images = out / "images"
    classes = world_classes(spec["seed"])
    clip = clip_corpus(classes, images, spec)
    vlm = vlm_corpus(classes, images, spec, source=name)
    wiki = wiki_corpus(classes, spec)
    rows = classification_dataset(classes, images, spec, name=name)
    wikiqa = wikiqa_questions(classes, [r for r in rows if r["split"] == "test"], spec)
    names = [c["name"] for c in classes]

    def dump(file, obj, lines=False):
        with open(out / file, "w", encoding="utf-8") as handle:
            if lines:
                handle.writelines(json.dumps(r) + "\n" for r in obj)
            else:
                json.dump(obj, handle, indent=1)

    dump("classes.json", names)
    dump("classes_full.json", classes)
    dump("manifest.jsonl", rows, lines=True)
    dump("wikiqa.jsonl", wikiqa, lines=True)
    dump("clip_corpus.jsonl", clip, lines=True)
    dump("vlm_corpus.json", vlm)
    dump("wiki_corpus.json", wiki)
    dump("counts.json", {c: n + spec["mcq_floor"] for c, n in long_tail_counts(classes, spec).items()})
    index = {
        "spec": spec,
        "name": name,
        "root": str(out),
        "images": str(images),
        "n_classes": len(classes),
        "n_clip": len(clip),
        "n_vlm": len(vlm),
        "n_vlm_images": sum("image" in r for r in vlm),
        "n_wiki": len(wiki),
        "n_rows": len(rows),
        "n_wikiqa": len(wikiqa),
    }
    dump("world.json", index)
    return index


def build_world_outputs(images, files, spec: dict | None = None, name: str = "world") -> dict:
    """Build the world onto the outputs of its rule and return its index: the folder ``images`` and the ``files``
    that :func:`build_world` writes beside it (each path ending in the name of one). The world is built in the
    folder ``.part`` beside ``images`` (the index's "root", named in ``world.json``), then moved into place."""
    images = Path(images)
    work = images.parent / ".part"
    shutil.rmtree(work, ignore_errors=True)
    index = build_world(work, spec, name=name)
    # the files first and the images last: Snakemake reruns the job unless every output is in place
    for path in map(Path, files):
        os.replace(work / path.name, path)
    shutil.rmtree(images, ignore_errors=True)
    os.replace(work / "images", images)
    shutil.rmtree(work)
    return index
