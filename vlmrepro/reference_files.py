"""Files of the paper's world the tests need, fetched from the package registries at install time
(vlmrepro/data/reference_files.yaml): the real tokenizers of the paper's checkpoints and the class names of its
datasets. ``python -m vlmrepro.reference_files DIR`` writes DIR/<section>/<name>/<file> for each, every archive and
every file checked against its sha256. The tests' and the oracle's tiny checkpoints are built on the tokenizers.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

import yaml

from .download import fetch, verify_checksum
from .io import atomic_path

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".reference"


def pins() -> dict:
    return yaml.safe_load(resources.files("vlmrepro").joinpath("data/reference_files.yaml").read_text())


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


def from_llama_js(source: bytes, pin: dict) -> bytes:
    """llama-tokenizer-js embeds the vocabulary (base64, one piece a line) and the merges (base64 of little-endian
    uint16 pairs of piece ids)."""
    text = source.decode()
    vocab = base64.b64decode(re.search(r'const llama_vocab_base64 = "([^"]*)"', text).group(1)).decode().split("\n")
    packed = base64.b64decode(re.search(r'const llama_merges_binary = "([^"]*)"', text).group(1))
    ids = struct.unpack(f"<{len(packed) // 2}H", packed)
    merges = [f"{vocab[ids[i]]} {vocab[ids[i + 1]]}" for i in range(0, len(ids), 2)]
    return json.dumps(llama_tokenizer_json(vocab, merges), ensure_ascii=False, indent=2).encode()


def from_bert_json(source: bytes, pin: dict) -> bytes:
    """bert-tokenizer's list: word starts marked "▁", continuations bare, [unused0] overwritten with "▁"."""
    tokens = json.loads(source)
    tokens[1] = "[unused0]"

    def wordpiece(token: str) -> str:
        if len(token) > 1 and token.startswith("[") and token.endswith("]"):
            return token
        return token[1:] if token.startswith("▁") else f"##{token}"

    return ("\n".join(wordpiece(t) for t in tokens) + "\n").encode()


def from_python_list(source: bytes, pin: dict) -> bytes:
    """A module-level list of strings (``pin["variable"]``), read without running the module."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == pin["variable"] for t in node.targets):
            return json.dumps(ast.literal_eval(node.value), ensure_ascii=False).encode()
    raise ValueError(f"{pin['member']} defines no {pin['variable']}")


def from_json_key(source: bytes, pin: dict) -> bytes:
    return json.dumps(json.loads(source)[pin["key"]], ensure_ascii=False).encode()


BUILDERS = {"llama_js": from_llama_js, "bert_json": from_bert_json, "python_list": from_python_list,
            "json_key": from_json_key}  # fmt: skip


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(pin: dict, work: Path) -> Path:
    """The archive of a pin, checked: an npm tarball by URL, or a wheel through pip (so a configured mirror is used)."""
    if "url" in pin:
        return fetch(pin["url"], work / "archive.tgz", f"sha256:{pin['sha256']}")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:", "-d",
               str(work), pin["pip"]]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip could not download {pin['pip']}:\n{done.stderr[-2000:]}")
    (wheel,) = work.glob("*.whl")
    verify_checksum(wheel, f"sha256:{pin['sha256']}", source=pin["pip"])
    return wheel


def _member_reader(archive: Path):
    if archive.suffix == ".whl":
        data = zipfile.ZipFile(io.BytesIO(archive.read_bytes()))
        return data.read
    tar = tarfile.open(archive)
    return lambda member: tar.extractfile(member).read()


def fetch_entry(section: str, name: str, pin: dict, root: Path) -> None:
    """Download the archive, make its files, check each against its pin, then place them (a file whose digest
    differs is never written)."""
    with tempfile.TemporaryDirectory() as work:
        read = _member_reader(_download(pin, Path(work)))
        if pin["build"] == "copy":
            made = {file: read(member) for file, member in pin["members"].items()}
        else:
            (file,) = pin["files"]
            made = {file: BUILDERS[pin["build"]](read(pin["member"]), pin)}
    for file, data in made.items():
        if sha256(data) != pin["files"][file]:
            raise RuntimeError(
                f"{section} {name}: {file} made from {pin.get('url') or pin['pip']} has sha256 {sha256(data)}, "
                f"expected {pin['files'][file]} (vlmrepro/data/reference_files.yaml); nothing was written"
            )
    for file, data in made.items():
        with atomic_path(root / section / name / file) as tmp:
            tmp.write_bytes(data)


def _complete(root: Path, section: str, name: str, pin: dict) -> bool:
    return all((root / section / name / file).is_file() for file in pin["files"])


def ensure_reference_files(root=DEFAULT_DIR) -> Path:
    """Every pinned file under ``root``, fetched where missing; returns ``root``."""
    root = Path(root)
    for section, entries in pins().items():
        for name, pin in entries.items():
            if not _complete(root, section, name, pin):
                fetch_entry(section, name, pin, root)
    return root


def reference_dir(section: str, name: str, root=DEFAULT_DIR) -> Path:
    """The folder of one fetched entry (``tokenizers``/``llama2``, ``class_lists``/``stanford_cars``); a clear
    error when it was never fetched."""
    if not _complete(Path(root), section, name, pins()[section][name]):
        raise FileNotFoundError(
            f"{section}/{name} is not in {root}: run `make venv` (or python -m vlmrepro.reference_files {root})"
        )
    return Path(root) / section / name


def tokenizer_dir(name: str, root=DEFAULT_DIR) -> Path:
    return reference_dir("tokenizers", name, root)


if __name__ == "__main__":
    print(f"reference files in {ensure_reference_files(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR)}")
