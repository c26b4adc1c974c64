"""The tiny LLaVA-OneVision and InternVL3 chat models (vlmrepro/demo/chat/onevision_internvl.py): they load through
the Auto classes offline, render the published chat templates, run a padded two-image batch through forward and
generate, and build byte-identically."""

import pytest
import torch
from PIL import Image

from vlmrepro.demo.chat import build_tiny_chat

ARCHS = ["llava_onevision", "internvl"]

QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
PREFILLED = QUESTION + [{"role": "assistant", "content": [{"type": "text", "text": "A photo of a"}]}]

# The published templates' renderings: Qwen2 turns; the image as <image> (OneVision) or <IMG_CONTEXT> (InternVL3-hf,
# which its processor expands to <img><IMG_CONTEXT>...</img>), on a line of its own before the text.
GOLDEN = {
    "llava_onevision": "<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n<|im_start|>assistant\n",
    "internvl": "<|im_start|>user\n<IMG_CONTEXT>\nWhat is this?<|im_end|>\n<|im_start|>assistant\n",
}
TOKENS = {
    "llava_onevision": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
    "internvl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module", params=ARCHS)
def built(request, tmp_path_factory):
    import transformers as tf

    out = tmp_path_factory.mktemp(request.param) / "model"
    build_tiny_chat(out, {"arch": request.param})
    processor = tf.AutoProcessor.from_pretrained(out)
    model = tf.AutoModelForImageTextToText.from_pretrained(out).eval()
    return request.param, out, processor, model


def test_loads_offline_with_config_tokens_and_template(built):
    import transformers as tf

    arch, out, processor, model = built
    expected = {"llava_onevision": "LlavaOnevision", "internvl": "InternVL"}[arch]
    assert type(model).__name__ == f"{expected}ForConditionalGeneration"
    assert type(processor).__name__ == f"{expected}Processor"
    max_positions = tf.AutoConfig.from_pretrained(out).text_config.max_position_embeddings
    assert isinstance(max_positions, int) and max_positions >= 4096
    tok = processor.tokenizer
    assert tok.padding_side == "left"
    for token in TOKENS[arch]:  # each one id, in the vocabulary, not split by BPE
        assert tok.convert_tokens_to_ids(token) < model.config.text_config.vocab_size
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert model.generation_config.pad_token_id == tok.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert model.generation_config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    image_token = {"llava_onevision": "<image>", "internvl": "<IMG_CONTEXT>"}[arch]
    assert model.config.image_token_id == tok.convert_tokens_to_ids(image_token)
    if arch == "internvl":  # what InternVLProcessor reads from its tokenizer
        named = (tok.start_image_token, tok.end_image_token, tok.context_image_token)
        assert named == ("<img>", "</img>", "<IMG_CONTEXT>")


def test_chat_template_renders_the_published_shape(built):
    arch, _, processor, _ = built
    assert processor.chat_template
    prompt = processor.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert prompt == GOLDEN[arch]
    prefilled = processor.apply_chat_template(PREFILLED, continue_final_message=True, tokenize=False)
    assert prefilled == GOLDEN[arch] + "A photo of a"


def test_two_image_batch_runs_forward_and_generate(built):
    arch, _, processor, model = built
    long_text = "What type of object is in this photo? Choose one from red circle, blue square."
    long_question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": long_text}]}]
    prompts = [
        processor.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False),
        processor.apply_chat_template(long_question, add_generation_prompt=True, tokenize=False),
    ]
    images = [Image.new("RGB", (32, 32), (200, 30, 30)), Image.new("RGB", (48, 40), (30, 30, 200))]
    inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    mask = inputs["attention_mask"]
    assert mask[:, -1].all() and not mask[0, 0]  # left padding of the shorter prompt
    image_positions = (inputs["input_ids"] == model.config.image_token_id).sum(dim=1)
    assert (image_positions > 0).all()
    if arch == "internvl":  # one tile an image: <img> + image_seq_length contexts + </img>
        assert image_positions.tolist() == [model.config.image_seq_length] * 2
        assert inputs["pixel_values"].shape[0] == 2

    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    length = inputs["input_ids"].shape[1]
    assert generated.shape[0] == 2 and length < generated.shape[1] <= length + 4
    assert torch.equal(generated[:, :length], inputs["input_ids"])


def test_second_build_is_byte_identical(built, tmp_path):
    arch, out, _, _ = built
    again = tmp_path / "again"
    build_tiny_chat(again, {"arch": arch})
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
