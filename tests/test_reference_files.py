"""The real tokenizers fetched at install time (vlmrepro/data/reference_files.yaml): each gives the published ids."""

import json

import pytest

from vlmrepro import reference_files


@pytest.fixture(scope="module")
def root():
    return reference_files.ensure_reference_files() / "tokenizers"


def test_llama2_and_mistral_give_their_models_ids(root):
    from tokenizers import Tokenizer

    llama = Tokenizer.from_file(str(root / "llama2" / "tokenizer.json"))
    mistral = Tokenizer.from_file(str(root / "mistral" / "tokenizer.json"))
    assert llama.get_vocab_size() == mistral.get_vocab_size() == 32000
    assert llama.encode("Hello world").ids == [1, 15043, 3186]  # Llama-2 (Vicuna-v1.5)
    assert mistral.encode("Hello world").ids == [1, 22557, 1526]  # Mistral-7B
    # the prompt of LLaVA-1.5 with <image> as plain text (llava-hf adds it as token 32000)
    prompt = "USER: <image>\nWhat type of object is in this photo?\nASSISTANT:"
    assert llama.encode(prompt).ids[:8] == [1, 3148, 1001, 29901, 529, 3027, 29958, 13]


def test_gpt2_and_bert_vocabularies(root):
    from tokenizers import Tokenizer, models, pre_tokenizers

    gpt2 = Tokenizer(models.BPE.from_file(str(root / "gpt2" / "vocab.json"), str(root / "gpt2" / "merges.txt")))
    gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert gpt2.encode("Hello world").ids == [15496, 995]
    assert len(json.loads((root / "gpt2" / "vocab.json").read_text())) == 50257
    bert = (root / "bert" / "vocab.txt").read_text().split("\n")[:-1]
    assert len(bert) == 30522 and bert[101] == "[CLS]" and bert[102] == "[SEP]" and bert[1996] == "the"


def test_a_file_that_does_not_match_its_pin_is_never_written(tmp_path, monkeypatch):
    pin = {**reference_files.pins()["tokenizers"]["bert"], "files": {"vocab.txt": "0" * 64}}
    with pytest.raises(RuntimeError, match="tokenizers bert: vocab.txt .* expected 0000"):
        reference_files.fetch_entry("tokenizers", "bert", pin, tmp_path)
    assert not (tmp_path / "tokenizers" / "bert").exists()


def test_a_missing_tokenizer_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="make venv"):
        reference_files.tokenizer_dir("llama2", tmp_path)


def test_class_lists_have_their_datasets_sizes():
    """StanfordCars' 196 official names, Flowers102's 102 and Caltech101's 102 as CLIP prompts them."""
    sizes = {}
    for name in ("stanford_cars", "flowers102", "caltech101"):
        folder = reference_files.reference_dir("class_lists", name, reference_files.ensure_reference_files())
        sizes[name] = len(json.loads((folder / "classes.json").read_text()))
    assert sizes == {"stanford_cars": 196, "flowers102": 102, "caltech101": 102}
