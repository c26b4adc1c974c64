"""Checksummed downloads, archive extraction (``vlmrepro/download.py``) and atomic output (``vlmrepro/io.py``).

Downloads use ``file://`` URLs to files made in ``tmp_path``: no network, and urllib handles them like any URL."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from vlmrepro import download
from vlmrepro.download import ChecksumError, extract_archive, fetch, file_digest, parse_checksum, verify_checksum
from vlmrepro.io import atomic_open, atomic_path, read_jsonl, write_json, write_jsonl, write_text

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
