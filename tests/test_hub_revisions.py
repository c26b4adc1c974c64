"""Hub revisions pinned by date (models.<m>.hub.revision: {before: YYYY-MM-DD}), resolved against a fake hub API on
localhost: the real huggingface_hub client, only the server is ours."""

import datetime
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlmrepro.config import check_config
from vlmrepro.hub import download_snapshot, resolve_revision

REPO = "Salesforce/instructblip-vicuna-7b"
# newest first, as the hub lists them
COMMITS = [
    ("c" * 40, "2024-09-12T10:00:00.000Z", "Update model for latest transformers changes"),
    ("b" * 40, "2024-04-30T23:59:00.000Z", "Upload processor"),
    ("a" * 40, "2023-06-03T08:00:00.000Z", "Upload model"),
]
FILES = {"config.json": b'{"model_type": "instructblip"}', "model.safetensors": b"weights"}


class FakeHub(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, body: bytes, content_type="application/json", extra=None):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == f"/api/models/{REPO}/commits/main":
            commits = [{"id": i, "date": d, "title": t, "message": "", "authors": [{"user": "x"}]} for i, d, t in COMMITS]
            return self._send(json.dumps(commits).encode())
        if path.startswith(f"/api/models/{REPO}/revision/"):
            sha = path.rsplit("/", 1)[1]
            info = {"id": REPO, "sha": sha, "siblings": [{"rfilename": f} for f in FILES]}
            return self._send(json.dumps(info).encode())
        if path.startswith(f"/api/models/{REPO}/tree/"):
            tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()} for f, b in FILES.items()]
            return self._send(json.dumps(tree).encode())
        if path.startswith(f"/{REPO}/resolve/"):
            sha, name = path.split("/resolve/")[1].split("/", 1)
            body = FILES[name]
            etag = '"' + hashlib.sha1(body).hexdigest() + '"'
            return self._send(body, "application/octet-stream", {"ETag": etag, "X-Repo-Commit": sha})
        self.send_error(404)

    do_HEAD = do_GET


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub.constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    yield endpoint
    server.shutdown()


def test_a_date_pin_is_the_newest_commit_before_that_day(fake_hub):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=fake_hub)
    assert resolve_revision(api, REPO, {"before": "2024-05-23"}) == "b" * 40  # not the September rework
    assert resolve_revision(api, REPO, {"before": datetime.date(2024, 4, 30)}) == "a" * 40  # strictly before the day
    assert resolve_revision(api, REPO, "main") == "main"  # a branch, tag or commit is the hub's to resolve
    with pytest.raises(ValueError, match=f"{REPO} has no commit before 2023-01-01"):
        resolve_revision(api, REPO, {"before": "2023-01-01"})


def test_the_download_records_the_commit_the_date_resolved_to(fake_hub, tmp_path):
    commit = download_snapshot(REPO, {"before": "2024-05-23"}, tmp_path / "model")
    assert commit == "b" * 40
    assert (tmp_path / "model" / "REVISION").read_text().strip() == commit
    assert (tmp_path / "model" / "config.json").read_bytes() == FILES["config.json"]


def test_a_date_pin_that_is_not_a_day_names_the_key():
    import yaml

    from tests.conftest import REPO as ROOT

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["models"]["blip2-opt-2.7b"]["hub"]["revision"] = {"before": "May 2024"}
    with pytest.raises(ValueError, match=r"models.blip2-opt-2.7b.hub.revision.before: 'May 2024' is not a day"):
        check_config(config)
