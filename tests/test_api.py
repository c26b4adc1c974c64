"""API models (``vlmrepro/api.py``) driven by the real OpenAI, Anthropic and google-genai SDK clients against a
mock server on loopback: request layouts, retries, the write-ahead cache, bounded concurrency and key hygiene.
The server answers from a per-test script of behaviours and records every request it sees."""

from __future__ import annotations

import base64
import csv
import http.server
import json
import re
import threading
import time
from collections import deque
from pathlib import Path

import pytest
from PIL import Image

from vlmrepro.api import PROVIDERS, ApiError, ApiModel, run_api_generation

KEY = "sk-test-SECRET-123"
MODELS = {"openai": "gpt-4-turbo-2024-04-09", "anthropic": "claude-3-opus-20240229", "gemini": "gemini-1.5-pro"}
TEMPLATE = "{question}\nAnswer with the class name."
ALL = list(PROVIDERS)


# --- mock server ----------------------------------------------------------------------------------------------


class MockServer:
    """Speaks just enough of the three APIs for the real SDKs. ``script`` is a queue of behaviours: "ok", "429",
    "500", "400", "401", "403", "404" (the error message quotes the key the client sent, as real servers do),
    "malformed" (HTTP 200, not JSON), "empty" (HTTP 200, JSON without the answer fields), "empty_text" (an answer
    of "") and "no_text" (each provider's answer without text: null content, no text block, a blocked Gemini
    answer); "ok" once empty."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: deque[str] = deque()
        self.delay = 0.0
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server.lock:
                    server.requests.append({"path": self.path, "headers": headers, "body": body})
                    number = len(server.requests)
                    behaviour = server.script.popleft() if server.script else "ok"
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay)
                status, payload, extra = server.answer(self.path, headers, body, behaviour, number)
                with server.lock:  # before replying: the client cannot send its next request earlier
                    server.in_flight -= 1
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    @staticmethod
    def answer(path, headers, body, behaviour, number) -> tuple[int, bytes, dict]:
        if behaviour == "malformed":
            return 200, b'{"choices": [tru', {}
        if behaviour == "empty":
            return 200, b"{}", {}
        if behaviour not in ("ok", "empty_text", "no_text"):
            status = int(behaviour)
            sent_key = headers.get("x-goog-api-key") or headers.get("x-api-key") or headers.get("authorization", "")
            message = {401: f"Incorrect API key provided: {sent_key.removeprefix('Bearer ')}"}.get(status, "mock error")
            error = {"type": "error", "error": {"code": status, "message": message, "type": "mock", "status": "MOCK"}}
            extra = {"retry-after": "7"} if status == 429 else {}
            return status, json.dumps(error).encode(), extra
        if path.endswith(":generateContent"):
            model = path.rsplit("/", 1)[1].removesuffix(":generateContent")
            text = body["contents"][0]["parts"][0]["text"]
        else:
            model = body["model"]
            content = body["messages"][0]["content"]
            text = next(part["text"] for part in content if part["type"] == "text")
        answer, reported = f"answer #{number} to {text[:20]}", f"{model}-2024-mock"
        answer = "" if behaviour == "empty_text" else None if behaviour == "no_text" else answer
        if path.endswith("/chat/completions"):
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}
            out = {"id": "c", "object": "chat.completion", "created": 0, "model": reported, "choices": [choice]}
        elif path.endswith("/messages"):
            content = [] if answer is None else [{"type": "text", "text": answer}]
            out = {"id": "m", "type": "message", "role": "assistant", "model": reported, "content": content}
            out.update(stop_reason="end_turn", usage={"input_tokens": 1, "output_tokens": 1})
        elif answer is None:  # blocked by a safety filter
            out = {"candidates": [{"finishReason": "SAFETY"}], "promptFeedback": {"blockReason": "SAFETY"}}
        else:
            out = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": answer}]}}],
                "modelVersion": reported,
            }
        return 200, json.dumps(out).encode(), {}


@pytest.fixture
def server():
    mock = MockServer()
    thread = threading.Thread(target=mock.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield mock
    mock.httpd.shutdown()
    mock.httpd.server_close()


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    for env in PROVIDERS.values():
        monkeypatch.setenv(env, KEY)
    for env in ("GOOGLE_API_KEY", "GOOGLE_GENAI_API_VERSION", "OPENAI_CUSTOM_HEADERS", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(env, raising=False)


# --- helpers --------------------------------------------------------------------------------------------------


def make_model(server, provider, **kwargs) -> ApiModel:
    base_url = f"{server.url}/v1" if provider == "openai" else server.url
    return ApiModel(provider, MODELS[provider], base_url=base_url, timeout=10, **kwargs)


def make_queries(tmp_path, n=3, suffixes=(".jpg",)) -> list[dict]:
    queries = []
    for i in range(n):
        suffix = suffixes[i % len(suffixes)]
        path = tmp_path / f"img{i}{suffix}"
        Image.new("RGB", (8, 8), (30 * i, 90, 200 - 20 * i)).save(path, "PNG" if suffix == ".png" else "JPEG")
        query = {"item": i, "row": 10 + i, "image": path.name, "path": str(path), "label": f"class{i}"}
        queries.append({**query, "choices": ["cat", "dog"], "question": f"What is in image {i}? Pick one."})
    return queries


def run(model, queries, tmp_path, template=TEMPLATE, **kwargs):
    """Returns (records, log lines, sleeps)."""
    logs, sleeps = [], []
    kwargs = {"max_attempts": 4, "backoff_s": 1.0, "concurrency": 1, **kwargs}
    cache = tmp_path / "cache" / "responses.jsonl"
    records = run_api_generation(
        model, queries, template, str(cache), log=logs.append, sleep=sleeps.append, revision="r1", **kwargs
    )
    return records, logs, sleeps


def b64decode(data: str) -> bytes:  # google-genai sends URL-safe base64
    return base64.urlsafe_b64decode(data.replace("+", "-").replace("/", "_"))


# --- 1. request layout ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
def test_success_request_layout(server, tmp_path, provider):
    queries = make_queries(tmp_path, 3, suffixes=(".jpg", ".png"))
    queries[2]["path"] = None  # a text-only request
    records, _, _ = run(make_model(server, provider), queries, tmp_path)

    assert len(server.requests) == 3
    for query, request, record in zip(queries, server.requests, records):
        text = TEMPLATE.replace("{question}", query["question"])
        raw = open(query["path"], "rb").read() if query["path"] else None
        mime = "image/png" if str(query["path"]).endswith(".png") else "image/jpeg"
        body = request["body"]
        if provider == "openai":
            assert request["path"] == "/v1/chat/completions"
            assert request["headers"]["authorization"] == f"Bearer {KEY}"
            assert set(body) == {"model", "messages"}  # no max_tokens, no temperature, nothing else
            assert body["model"] == MODELS[provider]
            [message] = body["messages"]
            assert message["role"] == "user"
            assert message["content"][0] == {"type": "text", "text": text}
            if raw is None:
                assert len(message["content"]) == 1
            else:
                _, image = message["content"]
                assert image["type"] == "image_url"
                prefix = f"data:{mime};base64,"
                assert image["image_url"]["url"].startswith(prefix)
                assert base64.b64decode(image["image_url"]["url"].removeprefix(prefix)) == raw
        elif provider == "anthropic":
            assert request["path"] == "/v1/messages"
            assert KEY in (request["headers"].get("x-api-key"), request["headers"].get("authorization", "")[7:])
            assert set(body) == {"model", "max_tokens", "messages"}
            assert body["model"] == MODELS[provider] and body["max_tokens"] == 1024
            [message] = body["messages"]
            assert message["role"] == "user"
            assert message["content"][-1] == {"type": "text", "text": text}
            if raw is None:
                assert len(message["content"]) == 1
            else:
                image = message["content"][0]  # image first
                assert image["type"] == "image" and image["source"]["type"] == "base64"
                assert image["source"]["media_type"] == mime
                assert base64.b64decode(image["source"]["data"]) == raw
        else:
            assert re.fullmatch(rf"/v1(beta)?/models/{re.escape(MODELS[provider])}:generateContent", request["path"])
            assert request["headers"]["x-goog-api-key"] == KEY
            [content] = body["contents"]
            assert content["parts"][0] == {"text": text}
            if raw is None:
                assert len(content["parts"]) == 1
            else:
                [_, image] = content["parts"]
                assert image["inlineData"]["mime_type"] == mime
                assert b64decode(image["inlineData"]["data"]) == raw  # the file's bytes, not re-encoded
        answer = f"answer #{query['item'] + 1} to {text[:20]}"
        copied = {k: query[k] for k in ("item", "row", "image", "label", "choices")}
        expected = {"model_revision": "r1", "prompt": text, "status": "ok", "output": answer, "pred": answer}
        assert record == {**copied, **expected, "model_reported": f"{MODELS[provider]}-2024-mock"}


def test_gif_and_webp_images_go_as_the_png_of_their_first_frame_in_rgb(server, tmp_path):
    import io

    queries = make_queries(tmp_path, 2)
    frames = [Image.new("P", (8, 8), 1), Image.new("P", (8, 8), 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * 759)
    gif, webp = tmp_path / "animated.gif", tmp_path / "image.webp"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    Image.new("RGBA", (8, 8), (10, 20, 200, 128)).save(webp, lossless=True)
    queries[0]["path"], queries[1]["path"] = str(gif), str(webp)
    records, _, _ = run(make_model(server, "openai"), queries, tmp_path)
    assert [r["status"] for r in records] == ["ok", "ok"]
    sent = []
    for request in server.requests:
        url = request["body"]["messages"][0]["content"][1]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        sent.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert [image.mode for image in sent] == ["RGB", "RGB"]
    assert sent[0].getpixel((0, 0)) == (200, 10, 10)  # the first frame, not the second
    assert sent[1].getpixel((0, 0)) == Image.open(webp).convert("RGB").getpixel((0, 0))


def test_an_unreadable_image_stops_naming_its_file(server, tmp_path):
    queries = make_queries(tmp_path, 1)
    broken = tmp_path / "broken.gif"
    broken.write_bytes(b"not an image")
    queries[0]["path"] = str(broken)
    with pytest.raises(ValueError, match="broken.gif"):
        run(make_model(server, "openai"), queries, tmp_path)


def test_openai_max_tokens_only_when_given(server, tmp_path):
    run(make_model(server, "openai", max_tokens=50), make_queries(tmp_path, 1), tmp_path)
    assert server.requests[0]["body"]["max_tokens"] == 50


# --- 2. transient failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["429", "500", "malformed", "empty"])
@pytest.mark.parametrize("provider", ALL)
def test_transient_failures_then_success(server, tmp_path, provider, behaviour):
    server.script.extend([behaviour, behaviour])
    records, logs, sleeps = run(make_model(server, provider), make_queries(tmp_path, 1), tmp_path)
    assert len(server.requests) == 3  # two failures, then it stops at the first success
    [record] = records
    assert record["status"] == "ok" and record["output"].startswith("answer #3 to ")
    assert sleeps == ([7.0, 7.0] if behaviour == "429" else [1.0, 2.0])  # retry-after honoured, else exponential
    assert sum("retry" in line for line in logs) == 2


def test_backoff_is_capped(server, tmp_path):
    server.script.extend(["500"] * 5)
    _, _, sleeps = run(
        make_model(server, "openai"), make_queries(tmp_path, 1), tmp_path, max_attempts=6, max_backoff_s=5
    )
    assert len(server.requests) == 6 and sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]


# --- 3. persistent failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
def test_an_empty_text_is_an_answer_scored_wrong_and_counted(server, tmp_path, provider):
    """Upstream kept an HTTP 200 with an empty text as the answer: one request, cached, scored wrong, and counted
    for the page's note."""
    from vlmrepro.scoring import score_outputs
    from vlmrepro.tables import partial_note

    server.script.append("empty_text")
    records, _, _ = run(make_model(server, provider), make_queries(tmp_path, 2), tmp_path)
    assert len(server.requests) == 2
    assert [r["status"] for r in records] == ["ok", "ok"] and records[0]["pred"] == ""
    score = score_outputs([dict(r, label="answer") for r in records])
    assert score["n_evaluated"] == 2 and score["accuracy"] == pytest.approx(50) and score["n_empty_answers"] == 1
    assert not partial_note(score)  # evaluated, not missing


@pytest.mark.parametrize("behaviour", ["500", "malformed", "empty", "no_text"])
@pytest.mark.parametrize("provider", ALL)
def test_persistent_failure_gives_api_error(server, tmp_path, provider, behaviour):
    server.script.extend([behaviour] * 10)
    records, _, sleeps = run(make_model(server, provider), make_queries(tmp_path, 1), tmp_path, max_attempts=3)
    assert len(server.requests) == 3 and sleeps == [1.0, 2.0]
    [record] = records
    assert record["status"] == "api_error" and "output" not in record and "pred" not in record
    assert len(record["reason"]) <= 300
    expected = {"500": "500", "malformed": "JSONDecodeError: ", "empty": "MalformedResponse: "}.get(
        behaviour, "MalformedResponse: the response carries no text"
    )
    assert expected in record["reason"]
    cache = tmp_path / "cache" / "responses.jsonl"
    assert not cache.exists() or not cache.read_text()  # failures are never cached


@pytest.mark.parametrize(
    "provider, status", [(p, "401") for p in ALL] + [("openai", "400"), ("anthropic", "403"), ("gemini", "404")]
)
def test_client_errors_are_not_retried(server, tmp_path, provider, status):
    server.script.extend([status] * 5)
    records, _, sleeps = run(make_model(server, provider), make_queries(tmp_path, 1), tmp_path)
    assert len(server.requests) == 1 and sleeps == []
    assert records[0]["status"] == "api_error" and status in records[0]["reason"]


# --- 4. write-ahead cache -------------------------------------------------------------------------------------


def test_cache_rerun_sends_nothing(server, tmp_path):
    model, queries = make_model(server, "anthropic"), make_queries(tmp_path, 3)
    first, _, _ = run(model, queries, tmp_path)
    assert len(server.requests) == 3
    lines = [json.loads(line) for line in (tmp_path / "cache" / "responses.jsonl").read_text().splitlines()]
    assert [set(line) for line in lines] == [{"key", "value"}] * 3  # value: [output, reported model]

    second, logs, _ = run(make_model(server, "anthropic"), queries, tmp_path)
    assert len(server.requests) == 3 and second == first
    assert "3 items from the cache, 0 requests sent" in logs[-1]

    other, _, _ = run(model, queries, tmp_path, template="Q: {question}")  # another setting: new requests
    assert len(server.requests) == 6 and all(r["status"] == "ok" for r in other)
    assert [r["output"] for r in other] != [r["output"] for r in first]


def test_cache_ignores_truncated_last_line(server, tmp_path):
    model, queries = make_model(server, "gemini"), make_queries(tmp_path, 3)
    first, _, _ = run(model, queries, tmp_path)
    cache = tmp_path / "cache" / "responses.jsonl"
    cache.write_bytes(cache.read_bytes()[:-15])  # a run killed while writing its last line
    second, _, _ = run(model, queries, tmp_path)
    assert len(server.requests) == 4  # only the item whose line was cut
    assert [r["status"] for r in second] == ["ok"] * 3 and second[:2] == first[:2]
    third, _, _ = run(model, queries, tmp_path)  # the re-requested answer landed on a line of its own
    assert len(server.requests) == 4 and third == second


def test_rerun_requests_only_failed_items(server, tmp_path):
    model, queries = make_model(server, "openai"), make_queries(tmp_path, 3)
    server.script.extend(["ok", "500", "500", "ok"])
    first, _, _ = run(model, queries, tmp_path, max_attempts=2)
    assert [r["status"] for r in first] == ["ok", "api_error", "ok"]
    second, logs, _ = run(model, queries, tmp_path, max_attempts=2)
    assert len(server.requests) == 5  # 4, then item 1 alone
    assert [r["status"] for r in second] == ["ok"] * 3 and second[0] == first[0] and second[2] == first[2]
    assert "2 items from the cache, 1 requests sent" in logs[-1]


# --- 5. upstream's repeated calls -----------------------------------------------------------------------------


def test_calls_per_item_keeps_the_last_response(server, tmp_path):
    model, queries = make_model(server, "openai"), make_queries(tmp_path, 2)
    records, _, _ = run(model, queries, tmp_path, calls_per_item=3)
    assert len(server.requests) == 6
    assert [r["output"][:10] for r in records] == ["answer #3 ", "answer #6 "]
    again, _, _ = run(model, queries, tmp_path, calls_per_item=3)
    assert len(server.requests) == 6 and again == records


# --- 6. the key -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
def test_key_never_leaks(server, tmp_path, provider):
    model, queries = make_model(server, provider), make_queries(tmp_path, 2)
    server.script.extend(["ok", "401"])  # the 401 message quotes the key
    records, logs, _ = run(model, queries, tmp_path)
    assert all(KEY in json.dumps(r["headers"]) for r in server.requests)  # it was sent
    assert [r["status"] for r in records] == ["ok", "api_error"]
    assert "***" in records[1]["reason"]  # scrubbed, not merely absent
    assert KEY not in json.dumps(records)
    assert KEY not in (tmp_path / "cache" / "responses.jsonl").read_text()
    assert logs and not any(KEY in line for line in logs)

    server.script.append("401")
    with pytest.raises(ApiError) as error:
        model.ask("hello", None)
    assert KEY not in str(error.value) and "***" in str(error.value) and not error.value.retryable


@pytest.mark.parametrize("provider", ALL)
def test_a_key_read_with_windows_line_ending_is_stripped(server, monkeypatch, provider):
    monkeypatch.setenv(PROVIDERS[provider], KEY + "\r\n")  # a key file saved on Windows
    model = make_model(server, provider)
    server.script.append("ok")
    model.ask("hello", None)
    sent = json.dumps(server.requests[-1]["headers"])
    assert KEY in sent and KEY + "\\r" not in sent


def test_a_key_with_control_characters_inside_is_refused_naming_only_the_variable(monkeypatch):
    monkeypatch.setenv(PROVIDERS["openai"], "sk-abc\x07def")
    with pytest.raises(RuntimeError) as info:
        ApiModel("openai", MODELS["openai"])
    assert PROVIDERS["openai"] in str(info.value) and "abc" not in str(info.value)


def test_every_echoed_form_of_a_key_is_scrubbed():
    from vlmrepro.credentials import scrub

    key = "sk-a/b+c=d\u00e9"
    echoes = [key, repr(key)[1:-1], json.dumps(key)[1:-1], "sk-a%2Fb%2Bc%3Dd%C3%A9", "sk-a%2Fb%2Bc%3Dd%C3%A9"]
    echoes += ["sk-a/b%2Bc%3Dd%C3%A9", "sk-a\\/b+c=d\\u00e9"]  # quote()'s default keeps "/"; JSON may escape it
    echoes.append(key.encode("unicode_escape").decode())
    text = scrub(" | ".join(echoes), key)
    assert "sk-a" not in text and text.count("***") == len(echoes)


# --- 7. missing key -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
def test_missing_key(monkeypatch, provider):
    monkeypatch.delenv(PROVIDERS[provider])
    with pytest.raises(RuntimeError, match=rf"{PROVIDERS[provider]}.*is not set.*{MODELS[provider]}"):
        ApiModel(provider, MODELS[provider])


def test_gemini_falls_back_to_google_api_key(server, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", "g-other-key")
    assert make_model(server, "gemini").ask("hello", None) == ("answer #1 to hello", "gemini-1.5-pro-2024-mock")
    assert server.requests[0]["headers"]["x-goog-api-key"] == "g-other-key"


# --- 8. bounded concurrency -----------------------------------------------------------------------------------


def test_bounded_concurrency(server, tmp_path):
    server.delay = 0.05
    queries = make_queries(tmp_path, 8)
    records, _, _ = run(make_model(server, "openai"), queries, tmp_path, concurrency=2)
    assert server.max_in_flight == 2
    assert [r["item"] for r in records] == list(range(8)) and all(r["status"] == "ok" for r in records)


# --- 9. skipped images and bad input --------------------------------------------------------------------------


def test_skip_sends_no_request(server, tmp_path):
    queries = make_queries(tmp_path, 2)
    queries[0]["skip"] = "unreadable image"
    records, _, _ = run(make_model(server, "anthropic"), queries, tmp_path)
    assert len(server.requests) == 1
    assert records[0]["status"] == "skipped_image" and records[0]["reason"] == "unreadable image"
    assert records[0]["prompt"] == TEMPLATE.replace("{question}", queries[0]["question"])
    assert records[1]["status"] == "ok"


def test_template_needs_question(server, tmp_path):
    with pytest.raises(ValueError, match="question"):
        run(make_model(server, "openai"), make_queries(tmp_path, 1), tmp_path, template="Describe the image.")
    assert not server.requests


def test_unknown_provider():
    with pytest.raises(ValueError, match="unknown API provider"):
        ApiModel("mistral", "pixtral")


# --- the workflow rule, end to end ----------------------------------------------------------------------------


def api_workflow_config(server, tmp_path, **api) -> str:
    """The demo's shapes12 dataset, open world, with one API model (the mock server behind the real OpenAI
    client) as Table 1's only model."""
    import yaml

    from conftest import REPO

    config = yaml.safe_load((REPO / "demo" / "config.yaml").read_text())
    config["datasets"] = {"shapes12": config["datasets"]["shapes12"]}
    config["models"] = {
        "mock-gpt": {
            "family": "api",
            "paper_name": "GPT4",
            "api": {"provider": "openai", "model": MODELS["openai"], "base_url": f"{server.url}/v1"},
            "template": "{question}",
            "gpus": 0,
        }
    }
    config.update(finetunes={}, corpora={}, api={"enabled": True, "concurrency": 2, **api})
    config["report"]["findings"] = []
    config["tables"] = {
        "table1": {
            "paper_table": "Table 1",
            "groups": [{"models": ["mock-gpt"], "datasets": ["shapes12"], "columns": [{"setting": "open_world", "paper": "open-world"}]}],
        }
    }
    config["settings"] = {"open_world": config["settings"]["open_world"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return str(tmp_path / "config.yaml")


@pytest.mark.slow
def test_api_rule_runs_scores_caches_and_never_writes_the_key(server, tmp_path):
    """An API model of the registry on a demo dataset: the api_generate rule through the real OpenAI client, scored
    by the ordinary rule, up to the report; a forced rerun is served from the response cache; the key is in no file
    of the run (outputs, cache, logs, tables, report pages)."""
    import yaml

    from conftest import snakemake

    configfile = api_workflow_config(server, tmp_path)
    config = yaml.safe_load(Path(configfile).read_text())
    workdir = tmp_path / "run"
    server.script.extend(["429", "500"])  # transient failures on the way
    target = "results/scores/mock-gpt/shapes12/open_world.json"
    snakemake("--configfile", configfile, "--cores", "2", workdir=workdir)  # up to the report
    score = json.loads((workdir / target).read_text())
    assert "GPT4 [mock-gpt]" in (workdir / "results/report/table1.html").read_text()
    n_items = 12 * config["worlds"]["shapes"]["test_per_class"]
    assert score["n_evaluated"] == n_items and len(server.requests) == n_items + 2
    meta = json.loads((workdir / "results/outputs/mock-gpt/shapes12/open_world.meta.json").read_text())
    assert meta["models_reported"] == [f"{MODELS['openai']}-2024-mock"]
    snakemake("--configfile", configfile, "--cores", "2", target, "--forcerun", "api_generate", workdir=workdir)
    assert len(server.requests) == n_items + 2  # every answer came from the cache
    for path in workdir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_api_error_items_are_asked_again_on_the_next_run_without_forcerun(server, tmp_path):
    """Answers without text fail their items (api_error: left out, counted in the note); the next plain run asks
    those items only, and once none fail, nothing reruns."""
    from conftest import snakemake

    configfile = api_workflow_config(server, tmp_path, max_attempts=1)
    workdir, target = tmp_path / "run", "results/tables/table1.csv"
    server.script.extend(["no_text"] * 3 + ["empty_text"])  # the first three items fail, the fourth answers ""
    snakemake("--configfile", configfile, "--cores", "1", target, workdir=workdir)
    n_items = len(server.requests)  # one request per item
    score = json.loads((workdir / "results/scores/mock-gpt/shapes12/open_world.json").read_text())
    assert score["not_evaluated"] == {"api_error": 3} and score["n_empty_answers"] == 1
    [row] = [r for r in csv.DictReader((workdir / target).open()) if r["model"] == "mock-gpt"]
    assert "3 api error" in row["note"] and "1 empty answer(s), scored wrong" in row["note"]
    server.script.extend(["no_text"])  # asked again: one still fails
    snakemake("--configfile", configfile, "--cores", "1", target, workdir=workdir)
    assert len(server.requests) == n_items + 3
    score = json.loads((workdir / "results/scores/mock-gpt/shapes12/open_world.json").read_text())
    assert score["not_evaluated"] == {"api_error": 1}
    snakemake("--configfile", configfile, "--cores", "1", target, workdir=workdir)
    assert len(server.requests) == n_items + 4
    score = json.loads((workdir / "results/scores/mock-gpt/shapes12/open_world.json").read_text())
    assert score["not_evaluated"] == {} and score["n_evaluated"] == n_items
    assert "Nothing to be done" in snakemake("--configfile", configfile, "-n", target, workdir=workdir).output


@pytest.mark.slow
def test_api_cells_without_their_key_are_listed_as_not_run_naming_the_variable(tmp_path, monkeypatch):
    """api.enabled auto (the default): no key, no API job; the table says which variable to set."""
    import pandas as pd
    import yaml

    from conftest import REPO, snakemake

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = yaml.safe_load((REPO / "demo" / "config.yaml").read_text())
    config["models"] = {"gpt": {"family": "api", "paper_name": "GPT4", "template": "{question}", "gpus": 0,
                                "api": {"provider": "openai", "model": MODELS["openai"]}}}  # fmt: skip
    config.update(finetunes={}, corpora={})
    config.pop("api", None)  # the schema's default: auto
    config["report"]["findings"] = []
    config["settings"] = {"open_world": config["settings"]["open_world"]}
    config["tables"] = {"table1": {"paper_table": "Table 1", "groups": [
        {"models": ["gpt"], "datasets": ["shapes12"], "columns": [{"setting": "open_world", "paper": "open-world"}]}]}}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake("--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "results/tables/table1.csv",
                     workdir=tmp_path / "run")  # fmt: skip
    assert "api_generate" not in proc.output
    note = pd.read_csv(tmp_path / "run/results/tables/table1.csv")["note"].iloc[0]
    assert note == "not run: OPENAI_API_KEY is not set (the key of GPT4)"
