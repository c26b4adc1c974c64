"""The tiny Gemma 3 and SmolVLM2 chat models load through the Auto classes, render the published chat prompt shapes,
process a batch of two differently sized images, generate, and build byte-identically."""

import pytest
import torch

from vlmrepro.demo.chat import build_tiny_chat

ARCHS = ["gemma3", "smolvlm"]

USER_TURN = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}
ASSISTANT_PREFIX = {"role": "assistant", "content": [{"type": "text", "text": "This is a photo of a"}]}
LONG_QUESTION = "Choose one from red circle, blue square, green star. What type of object is in this photo?"

# Golden prompts: generation prompt, then the same turn continued from an assistant prefix.
GOLDEN = {
    "gemma3": (
        "<bos><start_of_turn>user\n<start_of_image>What is this?<end_of_turn>\n<start_of_turn>model\n",
        "<bos><start_of_turn>user\n<start_of_image>What is this?<end_of_turn>\n<start_of_turn>model\n"
        "This is a photo of a",
    ),
    "smolvlm": (
        "<|im_start|>User:<image>What is this?<end_of_utterance>\nAssistant:",
        "<|im_start|>User:<image>What is this?<end_of_utterance>\nAssistant: This is a photo of a",
    ),
}

# What one image becomes in the token sequence: Gemma 3, 4 soft tokens between <start_of_image> and <end_of_image>;
# SmolVLM, both test images fill a 2 x 2 grid of tiles plus the global image, 4 <image> tokens each.
IMAGE_TOKENS_PER_IMAGE = {"gemma3": ("<image_soft_token>", 4), "smolvlm": ("<image>", 5 * 4)}


def _needs(arch):
    if arch == "smolvlm":
        pytest.importorskip("num2words", reason="SmolVLMProcessor requires the num2words package")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-chat")
    cache = {}

    def get(arch):
        if arch not in cache:
            _needs(arch)
            import transformers as tf

            build_tiny_chat(root / arch, {"arch": arch})
            processor = tf.AutoProcessor.from_pretrained(root / arch)
            model = tf.AutoModelForImageTextToText.from_pretrained(root / arch).eval()
            cache[arch] = (root / arch, processor, model)
        return cache[arch]

    return get


def _images():
    from PIL import Image

    return Image.new("RGB", (32, 32), (200, 30, 30)), Image.new("RGB", (48, 40), (30, 30, 200))


@pytest.mark.parametrize("arch", ARCHS)
def test_config_tokenizer_and_generation_settings(arch, built):
    import transformers as tf

    path, processor, model = built(arch)
    config = tf.AutoConfig.from_pretrained(path)
    assert isinstance(config.text_config.max_position_embeddings, int)
    assert config.text_config.max_position_embeddings >= 4096
    assert config.text_config.hidden_size <= 64 and config.text_config.num_hidden_layers == 2
    tok = processor.tokenizer
    assert tok.padding_side == "left"
    assert processor.chat_template
    generation = model.generation_config
    assert generation.pad_token_id == tok.pad_token_id
    assert tok.eos_token_id in generation.eos_token_id
    if arch == "gemma3":
        assert (tok.boi_token, tok.eoi_token, tok.image_token) == (
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        )
        assert (config.boi_token_id, config.eoi_token_id, config.image_token_id) == (
            tok.boi_token_id,
            tok.eoi_token_id,
            tok.image_token_id,
        )
        assert tok.convert_tokens_to_ids("<end_of_turn>") in generation.eos_token_id
    else:
        assert config.image_token_id == tok.convert_tokens_to_ids("<image>") == processor.image_token_id
        assert tok.eos_token == "<end_of_utterance>"
    for token in tok.all_special_tokens:  # every special token is one id, never split
        assert len(tok.tokenize(token)) == 1, token


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_template_renders_published_shape(arch, built):
    _, processor, _ = built(arch)
    prompt = processor.apply_chat_template([USER_TURN], add_generation_prompt=True, tokenize=False)
    continued = processor.apply_chat_template(
        [USER_TURN, ASSISTANT_PREFIX], continue_final_message=True, tokenize=False
    )
    assert (prompt, continued) == GOLDEN[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_of_two_images_forward_and_generate(arch, built):
    _, processor, model = built(arch)
    short = processor.apply_chat_template([USER_TURN], add_generation_prompt=True, tokenize=False)
    long_turn = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": LONG_QUESTION}]}
    long = processor.apply_chat_template([long_turn], add_generation_prompt=True, tokenize=False)
    images = _images()
    # one list of images per prompt: a flat list would be read as both images of a single prompt
    inputs = processor(images=[[images[0]], [images[1]]], text=[short, long], padding=True, return_tensors="pt")
    ids = inputs["input_ids"]
    assert ids.shape[0] == 2
    assert inputs["attention_mask"][0, 0] == 0 and inputs["attention_mask"][:, -1].all()  # left padding
    token, count = IMAGE_TOKENS_PER_IMAGE[arch]
    token_id = processor.tokenizer.convert_tokens_to_ids(token)
    assert (ids == token_id).sum(dim=1).tolist() == [count, count]
    if arch == "gemma3":
        soft = "<image_soft_token>" * count
        assert f"\n\n<start_of_image>{soft}<end_of_image>\n\n" in processor.tokenizer.decode(ids[0])
    else:
        decoded = processor.tokenizer.decode(ids[0])
        assert "<fake_token_around_image><row_2_col_2>" in decoded and "<global-img>" in decoded

    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*ids.shape, model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, ids.shape[1] + 4)

    # the image reaches the logits (Gemma 3's zero-initialised projection is randomised by the builder)
    swapped = processor(images=[[images[1]], [images[0]]], text=[short, long], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(model(**swapped).logits[:, -1], logits[:, -1])

    with pytest.raises(ValueError):
        processor(images=list(images), text=[short, long], padding=True, return_tensors="pt")


@pytest.mark.parametrize("arch", ARCHS)
def test_build_is_byte_identical(arch, built, tmp_path):
    first, _, _ = built(arch)
    build_tiny_chat(tmp_path / arch, {"arch": arch})
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in (tmp_path / arch).iterdir())
    assert "model.safetensors" in names
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / arch / name).read_bytes(), name


def test_spec_overrides_sizes(tmp_path):
    import transformers as tf

    build_tiny_chat(
        tmp_path / "g", {"arch": "gemma3", "seed": 1, "hidden": 32, "image_size": 16, "mm_tokens_per_image": 1}
    )
    config = tf.AutoConfig.from_pretrained(tmp_path / "g")
    assert (config.text_config.hidden_size, config.vision_config.image_size, config.mm_tokens_per_image) == (32, 16, 1)


def test_smolvlm_without_image_splitting(tmp_path):
    _needs("smolvlm")
    import transformers as tf

    build_tiny_chat(tmp_path / "s", {"arch": "smolvlm", "do_image_splitting": False})
    processor = tf.AutoProcessor.from_pretrained(tmp_path / "s")
    prompt = processor.apply_chat_template([USER_TURN], add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[[_images()[1]]], text=[prompt], return_tensors="pt")
    assert inputs["pixel_values"].shape[:2] == (1, 1)  # the global image alone
    assert (inputs["input_ids"] == processor.image_token_id).sum() == 4
