"""The real tokenizers of the paper's checkpoints, fetched from the npm registry at install time
(vlmrepro/data/tokenizers.yaml): ``python -m vlmrepro.tokenizer_files DIR`` writes DIR/<name>/<file> for each, every
archive and every file checked against its sha256. The tests' and the oracle's tiny checkpoints are built on them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import sys
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

import yaml

from .download import fetch
from .io import atomic_path

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".tokenizers"


def pins() -> dict:
    return yaml.safe_load(resources.files("vlmrepro").joinpath("data/tokenizers.yaml").read_text())


def llama_tokenizer_json(vocab: list[str], merges: list[str]) -> dict:
    """Llama-2's tokenizer.json as the hub has it: prepend "▁" and turn spaces into "▁", BPE with byte fallback,
    <s> before every text."""
    special = ["<unk>", "<s>", "</s>"]
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True}
            for i, c in enumerate(special)
        ],  # fmt: skip
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                bos,
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<s>", "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "vocab": {token: i for i, token in enumerate(vocab)},
            "merges": merges,
        },
    }


def from_llama_js(source: str) -> bytes:
    """llama-tokenizer-js embeds the vocabulary (base64, one piece a line) and the merges (base64 of little-endian
    uint16 pairs of piece ids)."""
    vocab = base64.b64decode(re.search(r'const llama_vocab_base64 = "([^"]*)"', source).group(1)).decode().split("\n")
    packed = base64.b64decode(re.search(r'const llama_merges_binary = "([^"]*)"', source).group(1))
    ids = struct.unpack(f"<{len(packed) // 2}H", packed)
    merges = [f"{vocab[ids[i]]} {vocab[ids[i + 1]]}" for i in range(0, len(ids), 2)]
    return json.dumps(llama_tokenizer_json(vocab, merges), ensure_ascii=False, indent=2).encode()


def from_bert_json(source: str) -> bytes:
    """bert-tokenizer's list: word starts marked "▁", continuations bare, [unused0] overwritten with "▁"."""
    tokens = json.loads(source)
    tokens[1] = "[unused0]"

    def wordpiece(token: str) -> str:
        if len(token) > 1 and token.startswith("[") and token.endswith("]"):
            return token
        return token[1:] if token.startswith("▁") else f"##{token}"

    return ("\n".join(wordpiece(t) for t in tokens) + "\n").encode()


BUILDERS = {"llama_js": from_llama_js, "bert_json": from_bert_json}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_tokenizer(name: str, pin: dict, out_dir: Path) -> None:
    """Download the archive, make its files, check each against its pin, then place them (a file whose digest
    differs is never written)."""
    with tempfile.TemporaryDirectory() as work:
        archive = fetch(pin["url"], Path(work) / "archive.tgz", f"sha256:{pin['sha256']}")
        with tarfile.open(archive) as tar:
            read = lambda member: tar.extractfile(member).read()  # noqa: E731
            if pin["build"] == "copy":
                made = {file: read(member) for file, member in pin["members"].items()}
            else:
                (file,) = pin["files"]
                made = {file: BUILDERS[pin["build"]](read(pin["member"]).decode())}
    for file, data in made.items():
        if sha256(data) != pin["files"][file]:
            raise RuntimeError(
                f"tokenizer {name}: {file} made from {pin['url']} has sha256 {sha256(data)}, expected "
                f"{pin['files'][file]} (vlmrepro/data/tokenizers.yaml); nothing was written"
            )
    for file, data in made.items():
        with atomic_path(out_dir / name / file) as tmp:
            tmp.write_bytes(data)


def is_complete(out_dir: Path, pin: dict, name: str) -> bool:
    return all((out_dir / name / file).is_file() for file in pin["files"])


def ensure_tokenizers(out_dir=DEFAULT_DIR) -> Path:
    """Every pinned tokenizer under ``out_dir``, fetched where missing; returns ``out_dir``."""
    out_dir = Path(out_dir)
    for name, pin in pins().items():
        if not is_complete(out_dir, pin, name):
            fetch_tokenizer(name, pin, out_dir)
    return out_dir


def tokenizer_dir(name: str, root=DEFAULT_DIR) -> Path:
    """The folder of one fetched tokenizer; a clear error when it was never fetched."""
    folder = Path(root) / name
    if not is_complete(Path(root), pins()[name], name):
        raise FileNotFoundError(
            f"tokenizer {name} is not in {root}: run `make venv` (or python -m vlmrepro.tokenizer_files {root})"
        )
    return folder


if __name__ == "__main__":
    print(f"tokenizers in {ensure_tokenizers(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR)}")
