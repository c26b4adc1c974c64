"""Hugging Face hub snapshots pinned by revision. The resolved commit is written to ``REVISION`` in the model
directory and copied into every output made with the model."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from .credentials import read_credential, scrub
from .io import atomic_dir, atomic_path

# Weights in other formats than these are not needed when safetensors exist; fetching both doubles the download.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]
FALLBACK_PATTERNS = ["*.bin", "*.pt", "*.pth"]


def revision_name(revision) -> str:
    """A revision as config.yaml writes it: a branch, tag or commit, or ``{before: <date>}``."""
    return f"last commit before {revision['before']}" if isinstance(revision, dict) else str(revision)


def resolve_revision(api, repo_id: str, revision, token=None) -> str:
    """``revision`` itself, or for ``{before: YYYY-MM-DD}`` the newest commit of the main branch made before that
    day (UTC), read from the hub's commit list: the checkpoint as it was when a paper ran it, before later edits
    (the Salesforce repositories were reworked for newer transformers after the paper)."""
    if not isinstance(revision, dict):
        return revision
    before = datetime.datetime.fromisoformat(str(revision["before"])).replace(tzinfo=datetime.timezone.utc)
    commits = [c for c in api.list_repo_commits(repo_id, token=token) if c.created_at < before]
    if not commits:
        raise ValueError(f"{repo_id} has no commit before {revision['before']}")
    return max(commits, key=lambda c: c.created_at).commit_id


def download_snapshot(repo_id: str, revision, out_dir, token_env: str = "HF_TOKEN") -> str:
    """Download ``repo_id`` at ``revision`` (a branch, tag or commit, or ``{before: <date>}``) into ``out_dir``
    (atomically) and return the resolved commit."""
    from huggingface_hub import HfApi, snapshot_download

    token = read_credential(token_env)
    with atomic_dir(out_dir) as tmp:  # a failed download leaves neither the folder nor its .part
        try:
            api = HfApi()
            info = api.model_info(repo_id, revision=resolve_revision(api, repo_id, revision, token), token=token)
            files = [s.rfilename for s in info.siblings or []]
            patterns = ALLOW_PATTERNS + ([] if any(f.endswith(".safetensors") for f in files) else FALLBACK_PATTERNS)
            snapshot_download(repo_id, revision=info.sha, local_dir=tmp, allow_patterns=patterns, token=token)
        except Exception as err:  # offline mode, network errors, unknown revision, no access
            page = f"https://huggingface.co/{repo_id}"
            raise _hub_error(err, repo_id, f"{repo_id}@{revision_name(revision)}", page, token_env, token) from None
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        (tmp / "REVISION").write_text(info.sha + "\n")
    return info.sha


def link_local_checkpoint(source, out_dir) -> str:
    """Link every entry of the checkpoint folder ``source`` into ``out_dir`` (atomically) and record, as its
    revision, a digest of every file's path and contents (``local:sha256:<hex>``), which every output made with the
    model carries and every cache key includes; returns it."""
    from .download import folder_digest

    source = Path(source).resolve()
    revision = f"local:sha256:{folder_digest(source, skip=())}"
    with atomic_dir(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for entry in sorted(source.iterdir()):
            if entry.name != "REVISION":
                (tmp / entry.name).symlink_to(entry)
        (tmp / "REVISION").write_text(revision + "\n")
    return revision


def download_dataset_file(repo_id: str, filename: str, revision: str, dest, token_env: str = "HF_TOKEN") -> str:
    """One file of a hub dataset repository at ``revision``, placed atomically at ``dest``; returns the commit."""
    from huggingface_hub import HfApi, hf_hub_download

    token = read_credential(token_env)
    try:
        sha = HfApi().dataset_info(repo_id, revision=revision, token=token).sha
        with atomic_path(dest) as tmp:
            cached = hf_hub_download(repo_id, filename, repo_type="dataset", revision=sha, token=token)
            shutil.copyfile(cached, tmp)
    except Exception as err:
        page = f"https://huggingface.co/datasets/{repo_id}"
        what = f"{filename} of dataset {repo_id}@{revision}"
        raise _hub_error(err, f"dataset {repo_id}", what, page, token_env, token) from None
    return sha


def _hub_error(err: Exception, repo: str, what: str, page: str, token_env: str, token: str | None) -> RuntimeError:
    """Say what to do about missing access in terms of ``token_env``, the variable this workflow reads (the hub's
    own message does not mention it); other errors keep their type and message."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(err, GatedRepoError):
        if token:
            return RuntimeError(
                f"{repo} is gated and the token in {token_env} has no access to it: accept its licence at {page} "
                "with the account that token belongs to (or wait until the request is approved)"
            )
        return RuntimeError(
            f"{repo} is gated and {token_env} is not set: accept its licence at {page}, then "
            f"export {token_env}=<a read token of that account> (https://huggingface.co/settings/tokens)"
        )
    unauthorised = isinstance(err, HfHubHTTPError) and err.response.status_code == 401
    if isinstance(err, RepositoryNotFoundError) or unauthorised:
        if token:
            return RuntimeError(
                f"{repo} not found on the hub, or private and the token in {token_env} cannot see it "
                "(or is no longer valid)"
            )
        return RuntimeError(
            f"{repo} not found on the hub, or private or gated and {token_env} is not set: check {page}, "
            f"and export {token_env}=<a read token> if it needs one"
        )
    return RuntimeError(scrub(f"could not download {what}: {type(err).__name__}: {err}", token))
