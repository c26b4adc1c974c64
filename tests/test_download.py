"""Checksummed downloads, archive extraction (``vlmrepro/download.py``), atomic output (``vlmrepro/io.py``) and hub
access errors (``vlmrepro/hub.py``).

Downloads use ``file://`` URLs to files made in ``tmp_path``, or a local HTTP server where the connection itself
matters: no network. A full disk is simulated by a file object that fails with ENOSPC."""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

import vlmrepro.io
from vlmrepro import download
from vlmrepro.download import ChecksumError, extract_archive, fetch, file_digest, parse_checksum, verify_checksum
from vlmrepro.io import atomic_dir, atomic_open, atomic_path, read_jsonl, write_json, write_jsonl, write_text

PAYLOAD = b"upstream manifest\n" * 1000 + bytes(range(256))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic_path (``.<name>.*.part``) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "server" / "file.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    return src


@pytest.fixture
def dest_dir(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


# --- checksums ------------------------------------------------------------------------------------------------


def test_file_digest_and_verify(source):
    assert file_digest(source, "sha256") == hashlib.sha256(PAYLOAD).hexdigest()
    assert file_digest(source, "md5") == hashlib.md5(PAYLOAD).hexdigest()
    verify_checksum(source, sha256(PAYLOAD))
    verify_checksum(source, md5(PAYLOAD))
    verify_checksum(source, sha256(PAYLOAD).upper().replace("SHA256", "sha256"))  # hex case does not matter
    with pytest.raises(ChecksumError) as info:
        verify_checksum(source, sha256(b"other"), source="https://example.org/file.bin")
    assert "https://example.org/file.bin" in str(info.value)
    assert hashlib.sha256(PAYLOAD).hexdigest() in str(info.value)  # the actual digest is reported
    with pytest.raises(ChecksumError) as info:
        verify_checksum(source, md5(b"other"))
    assert str(source) in str(info.value)  # without a source, the path is named


def test_parse_checksum():
    assert parse_checksum("sha256:ABCdef") == ("sha256", "abcdef")
    assert parse_checksum("md5:0123") == ("md5", "0123")


@pytest.mark.parametrize(
    "checksum",
    ["", "abc123", "sha256", "sha256:", ":abc", "sha999:abc", "SHA-256:abc", "crc32:abc"],
)
def test_parse_checksum_malformed(checksum):
    with pytest.raises(ValueError) as info:
        parse_checksum(checksum)
    assert repr(checksum) in str(info.value)


# --- fetch ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checksum_of", [sha256, md5], ids=["sha256", "md5"])
def test_fetch_good_checksum(source, dest_dir, checksum_of):
    dest = dest_dir / "out.bin"
    got = fetch(source.as_uri(), dest, checksum_of(PAYLOAD), retries=1, backoff_s=0)
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest_dir) == []
    assert sorted(p.name for p in dest_dir.iterdir()) == ["out.bin"]


def test_fetch_creates_missing_parent_folders(source, tmp_path):
    dest = tmp_path / "a" / "b" / "out.bin"
    fetch(source.as_uri(), dest, sha256(PAYLOAD), retries=1, backoff_s=0)
    assert dest.read_bytes() == PAYLOAD


def test_fetch_replaces_an_existing_file(source, dest_dir):
    dest = dest_dir / "out.bin"
    dest.write_bytes(b"stale")
    fetch(source.as_uri(), dest, sha256(PAYLOAD), retries=1, backoff_s=0)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("checksum_of", [sha256, md5], ids=["sha256", "md5"])
def test_fetch_wrong_checksum_keeps_nothing(source, dest_dir, checksum_of, monkeypatch):
    calls = []
    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: calls.append(a[0]) or real_urlopen(*a, **k))
    dest = dest_dir / "out.bin"
    url = source.as_uri()
    with pytest.raises(ChecksumError) as info:
        fetch(url, dest, checksum_of(b"something else"), retries=3, backoff_s=0)
    assert url in str(info.value)
    assert not dest.exists()
    assert leftovers(dest_dir) == []
    assert list(dest_dir.iterdir()) == []
    assert calls == [url]  # a checksum mismatch is not retried


def test_fetch_wrong_checksum_keeps_an_existing_destination(source, dest_dir):
    dest = dest_dir / "out.bin"
    dest.write_bytes(b"previous good copy")
    with pytest.raises(ChecksumError):
        fetch(source.as_uri(), dest, sha256(b"something else"), retries=1, backoff_s=0)
    assert dest.read_bytes() == b"previous good copy"
    assert leftovers(dest_dir) == []


def test_fetch_missing_url_is_retried_then_fails(tmp_path, dest_dir, monkeypatch):
    calls, sleeps = [], []
    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: calls.append(a[0]) or real_urlopen(*a, **k))
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    url = (tmp_path / "server" / "does-not-exist.bin").as_uri()
    dest = dest_dir / "out.bin"
    with pytest.raises(RuntimeError) as info:
        fetch(url, dest, sha256(PAYLOAD), retries=2, backoff_s=0)
    assert not isinstance(info.value, ChecksumError)
    assert url in str(info.value)
    assert "2 attempts" in str(info.value)
    assert calls == [url, url]
    assert sleeps == [0]  # one wait, between the two attempts
    assert not dest.exists()
    assert leftovers(dest_dir) == []


def test_fetch_backoff_grows_with_attempts(tmp_path, dest_dir, monkeypatch):
    sleeps = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    url = (tmp_path / "missing.bin").as_uri()
    with pytest.raises(RuntimeError):
        fetch(url, dest_dir / "out.bin", sha256(PAYLOAD), retries=4, backoff_s=1.5)
    assert sleeps == [1.5, 3.0, 4.5]


def test_fetch_recovers_after_a_transient_error(source, dest_dir, monkeypatch):
    calls = []
    real_urlopen = urllib.request.urlopen

    def flaky(url, *args, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise ConnectionResetError("connection reset by peer")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    dest = dest_dir / "out.bin"
    fetch(source.as_uri(), dest, sha256(PAYLOAD), retries=3, backoff_s=0)
    assert len(calls) == 2
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest_dir) == []


@pytest.mark.parametrize("checksum", ["deadbeef", "sha256:", "nope:abc"])
def test_fetch_malformed_checksum_fails_before_downloading(source, dest_dir, checksum, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("urlopen must not be called"))
    with pytest.raises(ValueError):
        fetch(source.as_uri(), dest_dir / "out.bin", checksum, retries=1, backoff_s=0)
    assert list(dest_dir.iterdir()) == []


# --- fetch: a connection dropped mid-body ------------------------------------------------------------------------


class CuttingHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD, but the first ``server.cut`` responses stop a third of the way in and close the connection:
    with a Content-Length that promised all of it, or (``server.chunked``) without the closing chunk."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.requests.append(self.path)
        whole = len(self.server.requests) > self.server.cut
        body = PAYLOAD if whole else PAYLOAD[: len(PAYLOAD) // 3]
        self.send_response(200)
        self.send_header("Connection", "close")
        if self.server.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body) + (b"0\r\n\r\n" if whole else b""))
        else:
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(params=["content-length", "chunked"])
def server(request, monkeypatch):
    """A CuttingHandler server on 127.0.0.1; ``server.url`` is its file, ``server.requests`` what it was asked."""
    monkeypatch.setenv("no_proxy", "*")  # a proxy from the environment must not answer for the local server
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CuttingHandler)
    srv.requests, srv.cut, srv.chunked = [], 0, request.param == "chunked"
    srv.url = f"http://127.0.0.1:{srv.server_port}/file.bin"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def test_fetch_whole_body_over_http(server, dest_dir):
    fetch(server.url, dest_dir / "out.bin", sha256(PAYLOAD), retries=1, backoff_s=0)
    assert (dest_dir / "out.bin").read_bytes() == PAYLOAD


def test_fetch_retries_a_cut_off_body(server, dest_dir):
    server.cut = 1
    dest = dest_dir / "out.bin"
    fetch(server.url, dest, sha256(PAYLOAD), retries=3, backoff_s=0.01)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2  # the cut is retried, not reported as a checksum mismatch
    assert leftovers(dest_dir) == []


def test_fetch_cut_off_every_time_keeps_nothing(server, dest_dir):
    server.cut = 99
    dest = dest_dir / "out.bin"
    with pytest.raises(RuntimeError) as info:
        fetch(server.url, dest, None, retries=2, backoff_s=0.01)  # no checksum: the short body alone must fail
    assert server.url in str(info.value)
    assert "2 attempts" in str(info.value)
    if not server.chunked:
        assert f"after {len(PAYLOAD) // 3} of {len(PAYLOAD)} bytes" in str(info.value)
    assert len(server.requests) == 2
    assert list(dest_dir.iterdir()) == []  # neither the destination nor a .part file


# --- a full disk ----------------------------------------------------------------------------------------------


class FullDisk:
    """A file that takes ``room`` more characters (or bytes), then fails as a full disk does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data):
        if len(data) > self.room:
            self.handle.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


ROWS = [{"image": f"./data/X/{i}.jpg", "label": "cat"} for i in range(20)]


def assert_full_disk_error(info, dest: Path) -> None:
    assert info.value.errno == errno.ENOSPC
    assert f"no space left on device while writing {dest}" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)  # the original error is kept


@pytest.mark.parametrize("previous", [None, "previous complete file\n"], ids=["new", "existing"])
@pytest.mark.parametrize("write", [write_jsonl, write_json], ids=["jsonl", "json"])
def test_full_disk_names_the_output_and_keeps_no_partial_file(tmp_path, monkeypatch, write, previous):
    dest = tmp_path / "out"
    if previous:
        dest.write_text(previous)
    real_open = open
    monkeypatch.setattr(vlmrepro.io, "open", lambda *a, **k: FullDisk(real_open(*a, **k), 100), raising=False)
    with pytest.raises(OSError) as info:
        write(dest, ROWS)
    assert_full_disk_error(info, dest)
    if previous:
        assert dest.read_text() == previous  # the old file, not a truncated new one
    else:
        assert not dest.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("previous", [None, b"previous good copy"], ids=["new", "existing"])
def test_fetch_full_disk_is_not_retried_and_keeps_nothing(source, dest_dir, monkeypatch, previous):
    dest = dest_dir / "out.bin"
    if previous:
        dest.write_bytes(previous)
    copies = []

    def copy_until_full(src, dst, length):
        copies.append(dst.name)
        FullDisk(dst, 100).write(src.read(length))

    monkeypatch.setattr(download.shutil, "copyfileobj", copy_until_full)
    with pytest.raises(OSError) as info:
        fetch(source.as_uri(), dest, sha256(PAYLOAD), retries=3, backoff_s=0)
    assert_full_disk_error(info, dest)
    assert len(copies) == 1  # waiting does not free the disk
    if previous:
        assert dest.read_bytes() == previous
    else:
        assert not dest.exists()
    assert leftovers(dest_dir) == []


# --- hub: missing credentials ---------------------------------------------------------------------------------

GATED = "meta-llama/Llama-3.2-11B-Vision-Instruct"


def hub_http_error(cls, status: int, url: str):
    """``cls`` (a huggingface_hub HTTP error) as the hub client raises it for a ``status`` answer from ``url``."""
    import httpx2  # the HTTP client of huggingface_hub 2.x

    response = httpx2.Response(status, request=httpx2.Request("GET", url))
    return cls(f"{status} Client Error. Cannot access repo at {url}.", response=response)


def fake_hub(monkeypatch, error, failing: str) -> None:
    """``HfApi.model_info`` or ``snapshot_download`` (``failing``) raises ``error``; the download first leaves a
    file in its folder, as a download cut short would."""
    import huggingface_hub

    def model_info(self, repo_id, **kwargs):
        if failing == "model_info":
            raise error
        return SimpleNamespace(sha="0" * 40, siblings=[SimpleNamespace(rfilename="model.safetensors")])

    def snapshot_download(repo_id, *, local_dir, **kwargs):
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "config.json").write_text("{}")
        raise error

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)


@pytest.mark.parametrize("failing", ["snapshot_download", "model_info"])
def test_gated_model_without_token_says_what_to_do(tmp_path, monkeypatch, failing):
    from huggingface_hub.errors import GatedRepoError

    from vlmrepro.hub import download_snapshot

    monkeypatch.delenv("HF_TOKEN", raising=False)
    fake_hub(monkeypatch, hub_http_error(GatedRepoError, 401, f"https://huggingface.co/{GATED}/resolve/x"), failing)
    with pytest.raises(RuntimeError) as info:
        download_snapshot(GATED, "main", tmp_path / "model")
    message = str(info.value)
    assert GATED in message and "is gated" in message
    assert "HF_TOKEN is not set" in message
    assert f"accept its licence at https://huggingface.co/{GATED}" in message
    assert "export HF_TOKEN=" in message
    assert list(tmp_path.iterdir()) == []  # neither the model folder nor its .part folder


def test_gated_model_with_a_token_without_access(tmp_path, monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    from vlmrepro.hub import download_snapshot

    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    fake_hub(monkeypatch, hub_http_error(GatedRepoError, 403, f"https://huggingface.co/{GATED}"), "snapshot_download")
    with pytest.raises(RuntimeError) as info:
        download_snapshot(GATED, "main", tmp_path / "model")
    assert "the token in HF_TOKEN has no access" in str(info.value)
    assert f"https://huggingface.co/{GATED}" in str(info.value)
    assert "hf_secret_value" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_hub_token_with_a_windows_line_ending_is_stripped_and_never_echoed(tmp_path, monkeypatch):
    import huggingface_hub

    from vlmrepro.hub import download_snapshot

    monkeypatch.setenv("HF_TOKEN", "hf_secret_value\r\n")
    tokens = []

    def model_info(self, repo_id, token=None, **kwargs):
        tokens.append(token)  # what an HTTP header would carry
        raise ValueError(f"Illegal header value b'Bearer {token!r}' (token {token!r} for {repo_id})")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    with pytest.raises(RuntimeError) as info:
        download_snapshot("a/b", "main", tmp_path / "model")
    assert tokens == ["hf_secret_value"]
    assert "hf_secret_value" not in str(info.value) and "***" in str(info.value)


def test_private_or_missing_model_without_token(tmp_path, monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    from vlmrepro.hub import download_snapshot

    monkeypatch.delenv("HF_TOKEN", raising=False)
    error = hub_http_error(RepositoryNotFoundError, 401, "https://huggingface.co/api/models/a/b")
    fake_hub(monkeypatch, error, "model_info")
    with pytest.raises(RuntimeError) as info:
        download_snapshot("a/b", "main", tmp_path / "model")
    assert "a/b not found on the hub" in str(info.value)
    assert "HF_TOKEN is not set" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_gated_dataset_without_token_names_the_dataset_page(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from vlmrepro.hub import download_dataset_file

    monkeypatch.delenv("HF_TOKEN", raising=False)
    error = hub_http_error(GatedRepoError, 401, "https://huggingface.co/api/datasets/org/data")

    def dataset_info(self, repo_id, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    with pytest.raises(RuntimeError) as info:
        download_dataset_file("org/data", "train.jsonl", "main", tmp_path / "train.jsonl")
    assert "dataset org/data is gated" in str(info.value)
    assert "accept its licence at https://huggingface.co/datasets/org/data" in str(info.value)
    assert list(tmp_path.iterdir()) == []


# --- extract_archive ------------------------------------------------------------------------------------------

MEMBERS = {"images/a.txt": b"alpha", "images/sub/b.bin": bytes(range(50)), "top.json": b"{}"}


def assert_extracted(dest: Path, members=MEMBERS) -> None:
    for name, data in members.items():
        assert (dest / name).read_bytes() == data
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted(members)


def make_tar(path: Path, members=MEMBERS, mode="w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, members=MEMBERS) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "name, mode",
    [("a.tar.gz", "w:gz"), ("a.tgz", "w:gz"), ("a.tar", "w"), ("a.tar.bz2", "w:bz2"), ("a.tar.xz", "w:xz")],
)
def test_extract_tar(tmp_path, name, mode):
    archive = make_tar(tmp_path / name, mode=mode)
    dest = tmp_path / "out" / "nested"  # created if missing
    extract_archive(archive, dest)
    assert_extracted(dest)


def test_extract_zip(tmp_path):
    archive = make_zip(tmp_path / "a.zip")
    dest = tmp_path / "out"
    extract_archive(archive, dest)
    assert_extracted(dest)


def test_extract_extension_is_case_insensitive(tmp_path):
    extract_archive(make_zip(tmp_path / "A.ZIP"), tmp_path / "z")
    assert_extracted(tmp_path / "z")
    extract_archive(make_tar(tmp_path / "A.TAR.GZ"), tmp_path / "t")
    assert_extracted(tmp_path / "t")


@pytest.mark.parametrize("evil", ["../evil", "images/../../evil", "/abs/evil"])
def test_extract_zip_rejects_members_outside(tmp_path, evil):
    archive = make_zip(tmp_path / "a.zip", {"ok.txt": b"fine", evil: b"pwned"})
    dest = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        extract_archive(archive, dest)
    assert repr(evil) in str(info.value)
    assert str(archive) in str(info.value)
    assert not (tmp_path / "evil").exists()
    assert list(dest.iterdir()) == []  # checked before anything is written


def test_extract_zip_allows_dotdot_that_stays_inside(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"images/../top.txt": b"inside"})
    extract_archive(archive, tmp_path / "out")
    # zipfile drops '..' components itself, so the file lands at images/top.txt; what matters is that it is
    # accepted and stays inside the destination
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in written] == [b"inside"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def test_extract_zip_rejects_sibling_folder_with_same_prefix(tmp_path):
    dest = tmp_path / "out"
    archive = make_zip(tmp_path / "a.zip", {"../out-evil/x.txt": b"pwned"})
    try:
        with pytest.raises(ValueError):
            extract_archive(archive, dest)
    finally:
        assert not (tmp_path / "out-evil" / "x.txt").exists()


def test_extract_tar_rejects_members_outside(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", {"../evil": b"pwned"})
    with pytest.raises(tarfile.TarError):  # the 'data' extraction filter refuses it
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", ["a.rar", "a.7z", "a.gz", "a.tar.zst", "archive"])
def test_extract_unknown_extension(tmp_path, name):
    archive = tmp_path / name
    archive.write_bytes(b"whatever")
    with pytest.raises(ValueError) as info:
        extract_archive(archive, tmp_path / "out")
    assert str(archive) in str(info.value)
    assert "unknown archive type" in str(info.value)


# --- io: atomic output ----------------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_atomic_open_writes_on_success(tmp_path):
    dest = tmp_path / "sub" / "out.txt"
    with atomic_open(dest, encoding="utf-8") as handle:
        handle.write("hello")
        assert not dest.exists()  # nothing at the destination until the block ends
    assert dest.read_text(encoding="utf-8") == "hello"
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_output_gets_the_mode_the_umask_gives(tmp_path, umask, mode):
    """As a plain open() would: an index.html at 0600 beside table pages at 0644 is not what a user asked for."""
    old = os.umask(umask)
    try:
        with atomic_open(tmp_path / "out.txt", encoding="utf-8") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("umask, mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_an_atomic_folder_publishes_what_its_writers_kept_private_with_the_umask(tmp_path, umask, mode, folder_mode):
    """safetensors writes model.safetensors at 0600 whatever the umask: a fine-tuned model others cannot load."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "model") as work:
            (work / "sub").mkdir(parents=True)
            save_file({"w": torch.zeros(2)}, str(work / "sub" / "model.safetensors"))
    finally:
        os.umask(old)
    assert (tmp_path / "model" / "sub" / "model.safetensors").stat().st_mode & 0o777 == mode
    assert (tmp_path / "model" / "sub").stat().st_mode & 0o777 == folder_mode


def test_atomic_open_binary_mode(tmp_path):
    dest = tmp_path / "out.bin"
    with atomic_open(dest, "wb") as handle:
        handle.write(b"\x00\x01")
    assert dest.read_bytes() == b"\x00\x01"


def test_atomic_open_exception_leaves_nothing(tmp_path):
    dest = tmp_path / "out.txt"
    with pytest.raises(Boom):
        with atomic_open(dest, encoding="utf-8") as handle:
            handle.write("half written")
            raise Boom
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_exception_keeps_previous_file(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(Boom):
        with atomic_open(dest, encoding="utf-8") as handle:
            handle.write("new")
            raise Boom
    assert dest.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_path_exception_leaves_nothing(tmp_path):
    dest = tmp_path / "out.bin"
    with pytest.raises(Boom):
        with atomic_path(dest) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".part")
            tmp.write_bytes(b"partial")
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_write_jsonl_format_and_round_trip(tmp_path):
    rows = [{"image": "./data/X/a.jpg", "label": "café", "idx": 0}, {"a": [1, 2], "b": None}]
    dest = tmp_path / "m.jsonl"
    write_jsonl(dest, rows)
    assert dest.read_text(encoding="utf-8") == "".join(json.dumps(r) + "\n" for r in rows)
    assert read_jsonl(dest) == rows
    assert leftovers(tmp_path) == []


def test_write_jsonl_failing_row_leaves_nothing(tmp_path):
    def rows():
        yield {"ok": 1}
        raise Boom

    dest = tmp_path / "m.jsonl"
    with pytest.raises(Boom):
        write_jsonl(dest, rows())
    assert list(tmp_path.iterdir()) == []


def test_write_jsonl_unserialisable_row_leaves_nothing(tmp_path):
    dest = tmp_path / "m.jsonl"
    with pytest.raises(TypeError):
        write_jsonl(dest, [{"ok": 1}, {"bad": object()}])
    assert list(tmp_path.iterdir()) == []


def test_write_text_and_json(tmp_path):
    write_text(tmp_path / "t.txt", "x\ny")
    assert (tmp_path / "t.txt").read_text() == "x\ny"
    write_json(tmp_path / "j.json", {"b": "é", "a": [1]})
    assert json.loads((tmp_path / "j.json").read_text(encoding="utf-8")) == {"b": "é", "a": [1]}
    assert (tmp_path / "j.json").read_text(encoding="utf-8").endswith("}\n")
    assert leftovers(tmp_path) == []


def test_read_jsonl_skips_blank_lines_and_names_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_jsonl(path)
    assert str(path) in str(info.value) and "line 2" in str(info.value)


def test_a_locally_built_models_revision_names_its_weights(tmp_path):
    """Tiny and demo models are rebuilt by their rules: the revision every cache key names changes with the weights
    (and a fine-tune's identity with its base's revision)."""
    from vlmrepro.backends import read_revision
    from vlmrepro.download import write_content_revision

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    first = write_content_revision(tmp_path, "tiny")
    assert read_revision(tmp_path) == first and first.startswith("tiny:sha256:")
    assert write_content_revision(tmp_path, "tiny") == first  # its own REVISION file is not hashed
    (tmp_path / "model.safetensors").write_bytes(b"retrained")
    assert write_content_revision(tmp_path, "tiny") != first
