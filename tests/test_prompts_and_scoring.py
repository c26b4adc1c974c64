"""Golden prompts for every model family × Table 1 setting of the paper config, answer extraction and the scoring
rules (docs/protocol.md#prompts, docs/protocol.md#scoring-rules)."""

import pytest
import yaml

from conftest import REPO
from vlmrepro.evaluate import prediction
from vlmrepro.prompts import extract_answer, render
from vlmrepro.queries import closed_world_question
from vlmrepro.scoring import exact_correct, score_outputs, substring_correct, word_boundary_correct

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
BASE = "What type of object is in this photo?"
CLOSED = closed_world_question(BASE, ["tench", "goldfish", "great white shark"])
VICUNA_NEXT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: <image>\n"
)

GOLDEN = {
    # model key: (open-world prompt, closed-world prompt)
    "llava-1.5-7b": (f"USER: <image>\n{BASE}\nASSISTANT:", f"USER: <image>\n{CLOSED}\nASSISTANT:"),
    "llava-1.5-13b": (f"USER: <image>\n{BASE}\nASSISTANT:", f"USER: <image>\n{CLOSED}\nASSISTANT:"),
    "llava-next-vicuna-7b": (f"{VICUNA_NEXT}{BASE} ASSISTANT:", f"{VICUNA_NEXT}{CLOSED} ASSISTANT:"),
    "llava-next-mistral-7b": (f"[INST] <image>\n{BASE}[/INST]", f"[INST] <image>\n{CLOSED}[/INST]"),
    "blip2-opt-2.7b": (f"Question: {BASE} Answer:", f"Question: {CLOSED} Answer:"),
    "instructblip-vicuna-7b": (f"Question: {BASE} Answer:", f"Question: {CLOSED} Answer:"),
    "instructblip-vicuna-13b": (f"Question: {BASE} Answer:", f"Question: {CLOSED} Answer:"),
}


@pytest.mark.parametrize("model", sorted(GOLDEN))
def test_golden_prompts_of_paper_config(model):
    template = CONFIG["models"][model]["template"]
    open_world, closed_world = GOLDEN[model]
    assert render(template, CONFIG["settings"]["open_world"]["question"]) == open_world
    assert render(template, closed_world_question(CONFIG["settings"]["closed_world"]["question"], ["tench", "goldfish", "great white shark"])) == closed_world


def test_every_vlm_of_table1_has_a_golden_prompt():
    models = {m for group in CONFIG["tables"]["table1"]["groups"] for m in group["models"]}
    vlms = [m for m in models if CONFIG["models"][m]["family"] not in ("open_clip", "api")]
    assert sorted(vlms) == sorted(GOLDEN)


WIKIQA = "Which position is particularly important for this object?\nA. a\nB. b\nC. c\nD. d\nChoose A, B, C, or D."
VICUNA_USER = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions."
)
VICUNA_HUMAN = VICUNA_USER.replace("curious user", "curious human").replace("the user's", "the human's")
# docs/protocol.md#imagewikiqa-prompts (HF and API models), docs/protocol.md#fine-tuned-llava-prompts (model_vqa)
WIKIQA_GOLDEN = {
    "llava-1.5-7b": f"USER: <image>\n{WIKIQA}\nASSISTANT: Let's think step by step.",
    "llava-1.5-13b": f"USER: <image>\n{WIKIQA}\nASSISTANT: Let's think step by step.",
    "llava-next-vicuna-7b": f"{VICUNA_HUMAN} USER: <image>\n{WIKIQA} ASSISTANT: Let's think step by step.",
    "llava-next-mistral-7b": f"[INST] <image>\n{WIKIQA}[/INST] Let's think step by step.",
    "blip2-opt-2.7b": f"Question: {WIKIQA} Let's think step by step. Answer:",
    "instructblip-vicuna-7b": f"Question: {WIKIQA} Let's think step by step. Answer:",
    "instructblip-vicuna-13b": f"Question: {WIKIQA} Let's think step by step. Answer:",
    "gpt-4-turbo": f"{WIKIQA} Let's think step by step.",
    "claude-3-opus": f"{WIKIQA} Let's think step by step.",
    "gemini-pro-vision": f"{WIKIQA} Let's think step by step.",
    "llava-proj": f"{VICUNA_USER} USER: <image>\n{WIKIQA} ASSISTANT:ASSISTANT: Let's think step by step. ",
    "llava-mix": f"{VICUNA_USER} USER: <image>\n{WIKIQA} ASSISTANT:ASSISTANT: Let's think step by step. ",
}


@pytest.mark.parametrize("model", sorted(WIKIQA_GOLDEN))
def test_imagewikiqa_prompts_are_verbatim(model):
    entry = CONFIG["finetunes"].get(model) or CONFIG["models"][model]
    assert CONFIG["settings"]["imagewikiqa"]["chain_of_thought"]
    assert render(entry["cot_template"], WIKIQA) == WIKIQA_GOLDEN[model]


def test_every_imagewikiqa_model_has_a_golden_prompt():
    models = {m for group in CONFIG["tables"]["table5"]["groups"] for m in group["models"]}
    models = {m.removesuffix("-imagenet") for m in models if CONFIG["models"].get(m, {}).get("family") != "baseline"}
    assert models == set(WIKIQA_GOLDEN)


def test_clip_text_prompt():
    template = CONFIG["settings"]["clip_zero_shot"]["text_template"]
    assert template.replace("{label}", "tench") == "A photo of a tench"


def test_template_without_question_slot_is_rejected():
    with pytest.raises(ValueError, match="question"):
        render("USER: <image>\nASSISTANT:", BASE)


@pytest.mark.parametrize(
    "decoded, marker, pred",
    [
        ("USER: \nWhat type of object is in this photo?\nASSISTANT: A goldfish.", "ASSISTANT:", "A goldfish."),
        ("[INST] \nWhat?[/INST] It is a tench ", "[/INST]", "It is a tench"),
        ("Question: What? Answer: a shark", "Answer:", "a shark"),
        ("a shark", "Answer:", "a shark"),  # BLIP-2 outputs without the prompt
        ("USER: x ASSISTANT: ASSISTANT: twice", "ASSISTANT:", "twice"),  # last marker wins
    ],
)
def test_answer_extraction(decoded, marker, pred):
    assert extract_answer(decoded, marker) == pred


def test_substring_rule_keeps_upstream_quirks():
    assert substring_correct("ant", "An African bush elephant")  # 'ant' in 'elephant'
    assert not word_boundary_correct("ant", "An African bush elephant")
    assert substring_correct("Tench", "it is a TENCH.")
    assert word_boundary_correct("tench", "it is a TENCH.")
    assert word_boundary_correct("great white shark", "a great white shark!")
    assert not substring_correct("great white shark", "a great shark")
    assert word_boundary_correct("2009 Bugatti Veyron 16.4 Coupe", "the 2009 bugatti veyron 16.4 coupe")


def test_score_outputs_counts_and_rules():
    rows = [
        {"status": "ok", "label": "ant", "pred": "an elephant"},
        {"status": "ok", "label": "tench", "pred": "a tench"},
        {"status": "ok", "label": "goldfish", "pred": "a carp"},
        {"status": "skipped_image", "label": "tench", "reason": "missing"},
    ]
    result = score_outputs(rows)
    assert result["n_items"] == 4 and result["n_evaluated"] == 3
    assert result["not_evaluated"] == {"skipped_image": 1}
    assert result["accuracy"] == pytest.approx(200 / 3, abs=1e-6)
    assert result["accuracy_word_boundary"] == pytest.approx(100 / 3, abs=1e-6)


def test_mistral_resplit_at_scoring():
    rows = [{"status": "ok", "label": "tench", "pred": "tench [/INST] goldfish"}]
    assert score_outputs(rows)["accuracy"] > 99
    assert score_outputs(rows, resplit_marker="[/INST]")["accuracy"] == 0


def test_all_items_not_evaluable_is_na_with_reason():
    rows = [{"status": "context_overflow", "label": "x", "reason": "prompt needs 9000 tokens"}] * 3
    result = score_outputs(rows)
    assert result["accuracy"] is None
    assert "context_overflow for 3 of 3" in result["na_reason"] and "9000" in result["na_reason"]


VICUNA_V1 = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions."
)


@pytest.mark.parametrize(
    "model, golden",
    [
        ("llava-1.5-7b", f"USER: <image>\n{CLOSED}\nASSISTANT: Let's think step by step."),
        ("blip2-opt-2.7b", f"Question: {CLOSED} Let's think step by step. Answer:"),
    ],
)
def test_golden_chain_of_thought_prompts(model, golden):
    assert render(CONFIG["models"][model]["cot_template"], CLOSED) == golden
    assert CONFIG["settings"]["closed_world_cot"]["max_new_tokens"] == 512


def test_golden_probabilistic_inference_contexts():
    llava = CONFIG["models"]["llava-1.5-7b"]["loglik"]
    assert render(llava["template"], BASE) == f"USER: <image>\n{BASE}\nASSISTANT: The photo features a"
    assert llava["method"] == "continuation"
    blip = CONFIG["models"]["blip2-opt-2.7b"]["loglik"]
    assert render(blip["template"], BASE).replace("{label}", "tench") == f"Question: {BASE} Answer: A tench"
    assert blip["method"] == "per_class"
    assert CONFIG["settings"]["prob_inference"]["limit"] == 1000


@pytest.mark.parametrize("setting, question", [
    ("prompt2", "Can you name the specific item pictured here?"),
    ("prompt3", "Identify the object in this image."),
    ("prompt4", "What is the main object depicted in this photograph?"),
])
def test_golden_prompt_variants(setting, question):
    assert CONFIG["settings"][setting]["question"] == question
    assert render(CONFIG["models"]["llava-1.5-7b"]["template"], question) == f"USER: <image>\n{question}\nASSISTANT:"


def test_golden_fine_tuning_prompts():
    recipe = CONFIG["finetunes"]["llava-proj"]
    train = f"{VICUNA_V1} USER: <image>\nWhat type of object is in the photo? ASSISTANT:"
    assert recipe["prompt"] == train
    assert render(recipe["template"], CONFIG["settings"]["finetuned_eval"]["question"]) == train
    assert CONFIG["finetunes"]["llava-lora"]["prompt"] == train
    blip = CONFIG["finetunes"]["blip2-qformer"]
    assert blip["prompt"] == "a photo of" and blip["answer"] == "blip_caption" and blip["answer_prefix"] == " "
    assert render(blip["template"], CONFIG["settings"]["finetuned_caption_eval"]["question"]) == "a photo of"


def test_feature_prompts_are_the_open_world_templates():
    """Features use the base question under each model's own template
    (docs/protocol.md#feature-extraction-prompts-and-probe-positions)."""
    assert CONFIG["settings"]["features"]["question"] == BASE
    assert render(CONFIG["models"]["blip2-opt-2.7b"]["template"], BASE) == f"Question: {BASE} Answer:"


# --- which text is scored: the zero-shot scripts' last marker, or model_vqa's generation alone -------------------

GENERATIONS = [
    # (decoded prompt + generation, generation alone)
    ("USER: <image>\nWhat is it? ASSISTANT: a cat", " a cat"),
    ("USER: <image>\nWhat is it? ASSISTANT: a cat USER: sure? ASSISTANT: a dog",
     " a cat USER: sure? ASSISTANT: a dog"),  # fmt: skip
    ("USER: <image>\nWhat is it? ASSISTANT: a cat</s>ASSISTANT:", " a cat</s>ASSISTANT:"),
    ("USER: <image>\nWhat is it? ASSISTANT: HUMAN: a cat", " HUMAN: a cat"),
]


@pytest.mark.parametrize("text, new_text", GENERATIONS)
def test_zero_shot_scoring_takes_the_text_after_the_last_marker(text, new_text):
    """Upstream's zero-shot scripts: decoded prompt + generation, split on the last answer marker."""
    assert prediction(text, new_text, "ASSISTANT:", "last_marker") == text.split("ASSISTANT:")[-1].strip()


@pytest.mark.parametrize("text, new_text", GENERATIONS)
def test_fine_tuned_scoring_takes_the_generation_whole(text, new_text):
    """model_vqa: the generated tokens alone, a second turn or stray role tag included, so exact match fails
    where the last-marker rule would have scored the second answer."""
    pred = prediction(text, new_text, "ASSISTANT:", "generation")
    assert pred == new_text.strip()
    assert exact_correct("a cat", pred) == (new_text.strip() == "a cat")


def test_an_unknown_answer_source_is_refused():
    with pytest.raises(ValueError, match="answer_from"):
        prediction("a", "a", "ASSISTANT:", "everything")


def test_records_keep_the_generation_and_score_it_for_fine_tuned_models(tiny_models, tmp_path):
    """A real tiny LLaVA: its generation is the decoded text minus the decoded prompt, and each answer source
    takes its pred from the right text."""
    from PIL import Image

    from vlmrepro.evaluate import run_generation
    from vlmrepro.models import VisionLanguageModel

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "x.png")
    queries = [{"item": 0, "row": 0, "image": "x.png", "path": str(tmp_path / "x.png"), "label": "x",
                "question": "What is this?"}]  # fmt: skip
    vlm = VisionLanguageModel(tiny_models / "llava", "llava", "float32", "cpu")
    template = "USER: <image>\n{question} ASSISTANT:"
    for source in ("last_marker", "generation"):
        (record,) = run_generation(vlm, queries, template, "ASSISTANT:", 12, 1, "r", log=lambda _: None,
                                   answer_from=source)  # fmt: skip
        assert record["output"].endswith(record["generation"]) and record["generation"]
        after_last_marker = record["output"].split("ASSISTANT:")[-1].strip()
        assert record["pred"] == (record["generation"].strip() if source == "generation" else after_last_marker)
