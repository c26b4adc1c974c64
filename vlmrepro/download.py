"""Downloads with checksum verification, retries and atomic placement.

Checksums are written ``"<algorithm>:<hex digest>"`` (``sha256:…`` for the upstream files, ``md5:…`` where the
dataset host only publishes MD5). A file is moved to its destination only after its length (Content-Length) and
checksum matched, so an interrupted or corrupted download never looks finished.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import shutil
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

from .io import atomic_path

CHUNK = 1 << 20


class ChecksumError(RuntimeError):
    pass


def file_digest(path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digest(folder, skip=("REVISION",)) -> str:
    """sha256 over every file of ``folder`` (recursively, symbolic links followed): its relative path and the sha256
    of its contents, so that a model folder's revision names its weights, not where it lies."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skip):
        digest.update(f"{path.relative_to(folder)}\0{file_digest(path, 'sha256')}\n".encode())
    return digest.hexdigest()


def write_content_revision(folder, kind: str) -> str:
    """Record a locally built model's revision as ``<kind>:sha256:<folder digest>`` (read by
    ``backends.read_revision``): results and caches made with other weights never pass for its own."""
    revision = f"{kind}:sha256:{folder_digest(folder)}"
    (Path(folder) / "REVISION").write_text(revision + "\n")
    return revision


def parse_checksum(checksum: str) -> tuple[str, str]:
    algorithm, sep, expected = checksum.partition(":")
    if not sep or algorithm not in hashlib.algorithms_available or not expected:
        raise ValueError(f"checksum {checksum!r} is not of the form 'sha256:<hex>' or 'md5:<hex>'")
    return algorithm, expected.lower()


def verify_checksum(path, checksum: str, source: str = "") -> None:
    algorithm, expected = parse_checksum(checksum)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"{source or path}: {algorithm} is {actual}, expected {expected}. "
            "The file changed upstream or the download is corrupt; it was not kept."
        )


def fetch(
    url: str, dest, checksum: str | None, retries: int = 3, backoff_s: float = 2.0, timeout_s: float = 120
) -> Path:
    """Download ``url`` to ``dest`` and verify it. Transient errors (a dropped connection included) are retried; a
    checksum mismatch and a full disk are not. ``checksum=None`` is for URLs that pin their content themselves (a
    gist raw URL at a revision)."""
    dest = Path(dest)
    if checksum is not None:
        parse_checksum(checksum)
    last_error: Exception | None = None
    for attempt in range(1, retries + 1):
        try:
            with atomic_path(dest) as tmp:
                with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as out:
                    _copy_body(response, out)
                if checksum is not None:
                    verify_checksum(tmp, checksum, source=url)
            return dest
        except ChecksumError:
            raise
        except (OSError, http.client.IncompleteRead) as err:  # URLError, resets, timeouts, cut-off bodies
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise  # retrying cannot free the disk; atomic_path named the destination
            last_error = err
            if attempt < retries:
                time.sleep(backoff_s * attempt)
    raise RuntimeError(f"download of {url} failed after {retries} attempts: {last_error}")


def _copy_body(response, out) -> None:
    """Copy the body and check it against Content-Length: urllib ends a plain body cut short by a dropped
    connection as if it were complete (only chunked bodies raise IncompleteRead)."""
    expected = response.headers.get("Content-Length")
    shutil.copyfileobj(response, out, CHUNK)
    if expected is not None and out.tell() != int(expected):
        raise ConnectionError(f"connection closed after {out.tell()} of {expected} bytes")


def extract_archive(archive, dest_dir) -> None:
    """Unpack a .tar/.tgz/.zip archive into ``dest_dir`` (members may not escape it)."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                _check_inside(dest_dir, member, archive)
            zf.extractall(dest_dir)
    elif any(name.endswith(s) for s in (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        with tarfile.open(archive) as tf:
            tf.extractall(dest_dir, filter="data")
    else:
        raise ValueError(f"{archive}: unknown archive type (expected .zip, .tar, .tgz, .tar.gz, .tar.bz2, .tar.xz)")


def download_and_extract(url: str, checksum: str | None, dest_dir, inner: str | None = None) -> None:
    """Download the archive at ``url`` into the new folder ``dest_dir``, verify it, unpack it there and delete it, so
    that only its contents remain; ``inner`` names an archive inside it (a dataset shipped as an archive of an
    archive), unpacked and deleted in turn."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True)
    archive = dest_dir / Path(url.split("?")[0]).name
    fetch(url, archive, checksum)
    extract_archive(archive, dest_dir)
    archive.unlink()
    if inner:
        inner_archive = dest_dir / inner
        extract_archive(inner_archive, dest_dir)
        inner_archive.unlink()


def _check_inside(dest_dir: Path, member: str, archive: Path) -> None:
    if not (dest_dir / member).resolve().is_relative_to(dest_dir.resolve()):
        raise ValueError(f"{archive}: member {member!r} would be written outside {dest_dir}")
