"""The tiny Qwen2.5-VL and Qwen3-VL chat models (vlmrepro/demo/chat/qwen.py) load through the Auto classes, render the
published chat layout, batch two images of different sizes with left padding, generate, and build reproducibly."""

import pytest
import torch
from PIL import Image

from vlmrepro.demo.chat import build_tiny_chat

QUESTION = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
STEP_BY_STEP = {"role": "assistant", "content": [{"type": "text", "text": "Let's think step by step."}]}
USER_TURN = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"

# the rendered prompts, pinned: Qwen2.5-VL adds its default system prompt, Qwen3-VL has none
GOLDEN = {
    "qwen2_5_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + USER_TURN + "<|im_start|>assistant\n",
    "qwen3_vl": USER_TURN + "<|im_start|>assistant\n",
}
ARCHS = sorted(GOLDEN)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each arch built once for the module, with the Auto classes' view of it."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    out = {}
    for arch in ARCHS:
        folder = tmp_path_factory.mktemp(arch) / "model"
        build_tiny_chat(folder, {"arch": arch})
        out[arch] = (
            folder,
            AutoConfig.from_pretrained(folder),
            AutoProcessor.from_pretrained(folder),
            AutoModelForImageTextToText.from_pretrained(folder).eval(),
        )
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_with_the_real_classes(built, arch):
    _, config, processor, model = built[arch]
    expected = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration"}
    assert type(model).__name__ == expected[arch]
    assert type(processor).__name__ == {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}[arch]
    assert isinstance(config.text_config.max_position_embeddings, int) and config.text_config.max_position_embeddings >= 4096
    assert config.text_config.hidden_size <= 64 and config.text_config.num_hidden_layers == 2
    tokenizer = processor.tokenizer
    assert tokenizer.padding_side == "left"
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>")}
    assert (config.image_token_id, config.video_token_id, config.vision_start_token_id) == tuple(ids.values())
    assert len(set(ids.values())) == 3 and config.text_config.vocab_size == len(tokenizer)
    pad, im_end = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (pad, im_end)
    assert model.generation_config.pad_token_id == pad and set(model.generation_config.eos_token_id) == {pad, im_end}
    # special tokens stay whole, and plain text round-trips through the byte-level BPE
    assert tokenizer.tokenize("<|im_start|>user\n")[0] == "<|im_start|>"
    text = "What type of object is in this photo?\nChoose one from: red circle, blue square."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_template_renders_the_published_layout(built, arch):
    processor = built[arch][2]
    prompt = processor.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert prompt == GOLDEN[arch]
    continued = processor.apply_chat_template(QUESTION + [STEP_BY_STEP], continue_final_message=True, tokenize=False)
    assert continued == GOLDEN[arch] + "Let's think step by step."


@pytest.mark.parametrize("arch", ARCHS)
def test_two_images_batched_generate_and_forward(built, arch):
    _, config, processor, model = built[arch]
    prompts = [
        processor.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False),
        processor.apply_chat_template(QUESTION + [STEP_BY_STEP], continue_final_message=True, tokenize=False),
    ]
    images = [Image.new("RGB", (32, 32), (200, 30, 30)), Image.new("RGB", (48, 40), (30, 30, 200))]
    inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    # few patches: each image becomes a handful of <|image_pad|> tokens, one per merged 2x2 patch group
    grid = inputs["image_grid_thw"]
    image_tokens = (inputs["input_ids"] == config.image_token_id).sum(dim=1)
    assert image_tokens.tolist() == (grid.prod(dim=1) // 4).tolist() and max(image_tokens) <= 8
    # the shorter prompt is padded on the left
    mask = inputs["attention_mask"]
    assert mask[0, 0] == 0 and mask[:, -1].all() and mask[1].all()

    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        logits = model(**inputs).logits
        alone = model(**processor(images=images[:1], text=prompts[:1], return_tensors="pt")).logits
    length = inputs["input_ids"].shape[1]
    assert torch.equal(output[:, :length], inputs["input_ids"]) and length < output.shape[1] <= length + 4
    assert all(isinstance(text, str) for text in processor.batch_decode(output[:, length:], skip_special_tokens=True))
    assert logits.shape == (2, length, config.text_config.vocab_size) and torch.isfinite(logits).all()
    # left padding does not change the padded prompt's logits (multimodal positions follow the attention mask)
    torch.testing.assert_close(logits[0, -alone.shape[1] :], alone[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_rebuild_is_byte_identical(built, arch, tmp_path):
    first = built[arch][0]
    build_tiny_chat(tmp_path / "again", {"arch": arch})
    files = sorted(p.name for p in first.iterdir())
    assert "model.safetensors" in files and "chat_template.jinja" in files
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == files
    for name in files:
        assert (tmp_path / "again" / name).read_bytes() == (first / name).read_bytes(), name
