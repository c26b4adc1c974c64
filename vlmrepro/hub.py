"""Hugging Face hub snapshots pinned by revision. The resolved commit is written to ``REVISION`` in the model
directory and copied into every output made with the model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Weights in other formats than these are not needed when safetensors exist; fetching both doubles the download.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]
FALLBACK_PATTERNS = ["*.bin", "*.pt", "*.pth"]


def download_snapshot(repo_id: str, revision: str, out_dir, token_env: str = "HF_TOKEN") -> str:
    """Download ``repo_id`` at ``revision`` into ``out_dir`` (atomically) and return the resolved commit."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    token = os.environ.get(token_env) or None
    try:
        info = HfApi().model_info(repo_id, revision=revision, token=token)
        files = [s.rfilename for s in info.siblings or []]
        patterns = ALLOW_PATTERNS + ([] if any(f.endswith(".safetensors") for f in files) else FALLBACK_PATTERNS)
        snapshot_download(repo_id, revision=info.sha, local_dir=tmp, allow_patterns=patterns, token=token)
    except GatedRepoError:
        raise RuntimeError(f"{repo_id} is gated: accept its licence on the hub and export {token_env}") from None
    except RepositoryNotFoundError:
        raise RuntimeError(f"{repo_id} not found on the hub (or private without {token_env} set)") from None
    except Exception as err:  # offline mode, network errors, unknown revision
        raise RuntimeError(f"could not download {repo_id}@{revision}: {type(err).__name__}: {err}") from err
    shutil.rmtree(tmp / ".cache", ignore_errors=True)
    (tmp / "REVISION").write_text(info.sha + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return info.sha


def download_dataset_file(repo_id: str, filename: str, revision: str, dest, token_env: str = "HF_TOKEN") -> str:
    """One file of a hub dataset repository at ``revision``, placed atomically at ``dest``; returns the commit."""
    from huggingface_hub import HfApi, hf_hub_download

    from .io import atomic_path

    token = os.environ.get(token_env) or None
    try:
        sha = HfApi().dataset_info(repo_id, revision=revision, token=token).sha
        with atomic_path(dest) as tmp:
            cached = hf_hub_download(repo_id, filename, repo_type="dataset", revision=sha, token=token)
            shutil.copyfile(cached, tmp)
    except Exception as err:
        raise RuntimeError(
            f"could not download {filename} of dataset {repo_id}@{revision}: {type(err).__name__}: {err}"
        ) from err
    return sha
