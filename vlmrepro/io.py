"""Atomic file output and JSON Lines helpers.

Every declared output is written to a temporary file beside its destination and renamed into place, so a killed
job never leaves a half-written file that Snakemake (or a rerun) would take as finished.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, which threads running rules would see)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def naming_full_disk(path: str | os.PathLike) -> Iterator[None]:
    """Report a full disk inside the block with ``path`` named: the bare ENOSPC error names no file, or only a
    temporary one."""
    try:
        yield
    except OSError as err:
        if err.errno == errno.ENOSPC and str(path) not in str(err):
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}") from err
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on error delete it (a full disk
    named with ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        with naming_full_disk(path):
            yield tmp
            if tmp.is_file():  # mkstemp's file is private (0600); the output gets what a plain open() would give it
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _apply_umask(folder: Path) -> None:
    """Give everything under ``folder`` the modes a plain open() or mkdir() would: writers such as safetensors
    create private (0600) files, which other users of a shared results folder could not read."""
    mask = _umask()
    for entry in [folder, *folder.rglob("*")]:
        mode = entry.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        wanted = (0o777 if stat.S_ISDIR(mode) or mode & 0o111 else 0o666) & ~mask
        if mode & 0o777 != wanted:  # an extracted archive's million files mostly have it already
            os.chmod(entry, wanted)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh ``<path>.part`` folder to fill; on success it replaces ``path``, on any error (a full disk named
    with ``path``) it is deleted, so no half-written folder is left under either name."""
    path = Path(path)
    work = path.with_name(path.name + ".part")
    shutil.rmtree(work, ignore_errors=True)
    try:
        with naming_full_disk(path):
            yield work
            _apply_umask(work)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(work, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_text(path, text: str) -> None:
    with atomic_open(path, encoding="utf-8") as handle:
        handle.write(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_jsonl(path, rows: Iterable[dict]) -> None:
    """One ``json.dumps`` line per row (default separators, as the upstream manifests)."""
    with atomic_open(path, encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def read_jsonl(path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {line_no} is not valid JSON ({err.msg})") from None
    return rows


def _files_in_tree(folder: str, recurse: bool = True) -> tuple[list[tuple[str, int, int]], list[str]]:
    """(path, size, mtime) of every file below ``folder`` (directly in it without ``recurse``), and the
    sub-folders not entered."""
    files, pending, skipped = [], [folder], []
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    (pending if recurse else skipped).append(entry.path)
                elif entry.is_file():
                    info = entry.stat()
                    files.append((entry.path, info.st_size, info.st_mtime_ns))
    return files, skipped


@functools.lru_cache(maxsize=None)
def folder_state(folder: str, threads: int = 8) -> str:
    """A fingerprint of every file below ``folder``: its path, size and modification time (not its contents, which
    the split's preparation hashes). An image replaced in place changes it, so a rule that takes it as a param reruns.
    The top-level sub-folders (ImageNet's 1,000 classes) are walked by ``threads`` threads, since a network file
    system answers many ``stat`` calls at once. Computed once per folder and process; ``"absent"`` for a folder that
    does not exist. Cost: docs/protocol.md#images-changed-in-place."""
    from concurrent.futures import ThreadPoolExecutor

    root = os.path.abspath(folder)
    if not os.path.isdir(root):
        return "absent"
    found, folders = _files_in_tree(root, recurse=False)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for files, _ in pool.map(_files_in_tree, folders):
            found.extend(files)
    found.sort()
    digest, cut = hashlib.sha256(), len(root) + 1
    for path, size, mtime in found:
        digest.update(f"{path[cut:]}\0{size}\0{mtime}\n".encode())
    return f"{len(found)} files, size+mtime sha256:{digest.hexdigest()}"
