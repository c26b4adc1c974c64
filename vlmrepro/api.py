"""Proprietary VLMs (GPT-4-class, Claude, Gemini) queried through their official Python SDKs.

API calls cost money, are rate limited and fail transiently, so:

- each response is appended to a write-ahead JSON Lines cache the moment it arrives, and a rerun (after a crash,
  a kill or a partial failure) requests only what is missing: nothing is paid for twice;
- the SDKs' own retries are off and one bounded tenacity policy decides what is retried (rate limits, server errors,
  connection trouble, malformed responses) and what is not (bad request, authentication, permission);
- the key is read only from the environment and ``ApiModel.ask`` never returns or raises it, so records, the
  cache and logs cannot leak it.

Request layouts follow the paper's upstream code exactly (text-then-image for OpenAI and Gemini, image-then-text
for Anthropic with ``max_tokens=1024``, no sampling options), since the reported numbers depend on them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from .cache import WriteAheadCache, cache_key
from .credentials import read_credential, scrub
from .prompts import render
from .records import base_record

PROVIDERS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
GEMINI_FALLBACK_ENV = "GOOGLE_API_KEY"


def missing_key(provider: str) -> str | None:
    """The variable to set when ``provider``'s key is not in the environment, else None (``api.enabled: auto``
    plans a provider's cells only when this is None)."""
    if read_credential(PROVIDERS[provider]):
        return None
    if provider == "gemini" and read_credential(GEMINI_FALLBACK_ENV):
        return None
    return PROVIDERS[provider] + (f" (or {GEMINI_FALLBACK_ENV})" if provider == "gemini" else "")
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
ANTHROPIC_MAX_TOKENS = 1024  # upstream value; the Messages API requires one
RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx; other 4xx (400/401/403/404...) would fail again
REASON_CHARS = 300


class MalformedResponse(RuntimeError):
    """A response that parsed but carried no answer text."""


class ApiError(RuntimeError):
    """A failed request. The message (``"ExceptionClass: message"``) is scrubbed of the key; ``retryable`` says
    whether trying again may help and ``retry_after`` is the server's requested wait in seconds, if any."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ApiModel:
    """One provider model behind its official SDK client, with the SDK's retries disabled."""

    def __init__(
        self,
        provider: str,
        model: str,
        base_url: str | None = None,
        max_tokens: int | None = None,
        timeout: float = 120.0,
    ):
        if provider not in PROVIDERS:
            raise ValueError(
                f"unknown API provider {provider!r} for model {model!r}; expected one of {sorted(PROVIDERS)}"
            )
        env = PROVIDERS[provider]
        key = read_credential(env)
        if not key and provider == "gemini":
            key = read_credential(GEMINI_FALLBACK_ENV)
            env = f"{env} (or {GEMINI_FALLBACK_ENV})"
        if not key:
            raise RuntimeError(
                f"{env} is not set: needed for API model {model!r} "
                "(set it in the environment; keys are never read from config)"
            )
        self.provider, self.model, self.max_tokens = provider, model, max_tokens
        self._key = key  # kept only to scrub it from whatever leaves ask()
        if provider == "openai":
            import openai

            self._client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)
            transient: tuple[type[BaseException], ...] = (openai.APIConnectionError,)
        elif provider == "anthropic":
            import anthropic

            self._client = anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)
            transient = (anthropic.APIConnectionError,)
        else:
            import httpx2  # google-genai's transport; it raises its connection errors unwrapped
            from google import genai
            from google.genai import errors, types

            options = types.HttpOptions(base_url=base_url, timeout=round(timeout * 1000), retry_options=None)
            self._client = genai.Client(api_key=key, vertexai=False, http_options=options)
            transient = (httpx2.TransportError, errors.UnknownApiResponseError)
        # A 200 whose body is not JSON surfaces as JSONDecodeError in all three SDKs.
        self._transient = (MalformedResponse, json.JSONDecodeError, *transient)

    def ask(self, text: str, image_bytes: bytes | None, media_type: str = "image/jpeg") -> tuple[str, str]:
        """One request; returns (response text, model name reported by the provider). Raises ApiError on any failure."""
        try:
            answer, reported = self._parse(self._send(text, image_bytes, media_type))
        except Exception as exc:
            # `from None`: the SDK exception may quote the key; its scrubbed text is all that travels on.
            raise ApiError(
                self._scrub(f"{type(exc).__name__}: {exc}"), self._retryable(exc), _retry_after(exc)
            ) from None
        return self._scrub(answer), self._scrub(reported)

    def _send(self, text: str, image_bytes: bytes | None, media_type: str) -> Any:
        b64 = base64.b64encode(image_bytes).decode("ascii") if image_bytes is not None else None
        if self.provider == "openai":
            content: list[Any] = [{"type": "text", "text": text}]
            if b64 is not None:
                content.append({"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{b64}"}})
            extra = {} if self.max_tokens is None else {"max_tokens": self.max_tokens}
            return self._client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": content}], **extra
            )
        if self.provider == "anthropic":
            content = [{"type": "text", "text": text}]
            if b64 is not None:  # image first, as upstream
                content.insert(
                    0, {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": b64}}
                )
            return self._client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens or ANTHROPIC_MAX_TOKENS,
                messages=[{"role": "user", "content": content}],
            )
        from google.genai import types

        contents: list[Any] = [text]
        if image_bytes is not None:
            contents.append(types.Part.from_bytes(data=image_bytes, mime_type=media_type))
        return self._client.models.generate_content(model=self.model, contents=contents)

    def _parse(self, response: Any) -> tuple[str, str]:
        try:
            if self.provider == "openai":
                answer, reported = response.choices[0].message.content, response.model
            elif self.provider == "anthropic":
                texts = [block.text for block in response.content if block.type == "text"]
                answer, reported = "".join(texts) if texts else None, response.model
            else:  # None for a blocked answer
                answer, reported = response.text, response.model_version
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise MalformedResponse(f"unexpected response layout ({type(exc).__name__}: {exc})") from None
        # upstream kept an empty text as the answer (scored wrong) and retried, then dropped, a response without
        # any: None content, no text block, a blocked Gemini answer (docs/protocol.md#api-models)
        if not isinstance(answer, str):
            raise MalformedResponse("the response carries no text")
        return answer, reported if isinstance(reported, str) and reported else self.model

    def _retryable(self, exc: Exception) -> bool:
        if isinstance(exc, self._transient):
            return True
        status = getattr(exc, "status_code", None)  # openai, anthropic
        if status is None:
            status = getattr(exc, "code", None)  # google-genai
        return isinstance(status, int) and (status in RETRY_STATUS or status >= 500)

    def _scrub(self, text: str) -> str:
        return scrub(text, self._key)


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    try:
        return float(headers["retry-after"]) if headers is not None and "retry-after" in headers else None
    except ValueError:  # an HTTP date; the exponential backoff applies instead
        return None


def image_payload(path: str) -> tuple[bytes, str]:
    """The bytes and media type sent for the image at ``path``. JPEG and PNG files go as they are; any other format
    Pillow reads (GIF, WebP, BMP, ...) goes as a PNG of its first frame in 8-bit RGB, as the local models load it
    (:func:`vlmrepro.evaluate.load_rgb`, upstream's ``Image.open(path).convert("RGB")``). An unreadable file
    raises, naming it."""
    media_type = MEDIA_TYPES.get(Path(path).suffix.lower())
    if media_type is not None:
        return Path(path).read_bytes(), media_type
    from PIL import UnidentifiedImageError

    from .evaluate import load_rgb

    try:
        rgb = load_rgb(path)  # the first frame of an animation
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not an image Pillow can read ({exc})") from None
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def retry_state_path(model: str, dataset: str, setting: str) -> str:
    """Where an API job records its api_error count and the ``retry`` token it ran under: beside the response cache,
    not among its outputs, which Snakemake deletes before the job runs again."""
    return f"results/api_cache/retry/{model}/{dataset}/{setting}.json"


def retry_token(state_path) -> str:
    """The ``retry`` param of an API job. While the job's last run left ``api_error`` items it changes on every plan
    (a hash of the token that run had), so the next run asks those items again and serves the rest from the cache;
    once a run leaves none it is the token that run had, so nothing reruns."""
    try:
        state = json.loads(Path(state_path).read_text())
    except (OSError, ValueError):  # never run, or cut short
        return ""
    if not state["n_api_error"]:
        return state["retry"]
    return f"retry {state['n_api_error']} api_error item(s), after {cache_key(state['retry'])[:16]}"


def record_retry_state(state_path, records: list[dict], retry: str) -> None:
    """What :func:`retry_token` reads on the next plan: this run's api_error count and its token."""
    from .io import write_json

    write_json(state_path, {"n_api_error": sum(r["status"] == "api_error" for r in records), "retry": retry})


def _cache_key(model: ApiModel, text: str, image_sha256: str | None, media_type: str, call: int) -> str:
    request = {
        "provider": model.provider,
        "model": model.model,
        "text": text,
        "image_sha256": image_sha256,
        "media_type": media_type,
        "max_tokens": model.max_tokens,
        "call": call,
    }
    return cache_key(request)


def run_api_generation(
    model: ApiModel,
    queries: list[dict],
    template: str,
    cache_path: str,
    *,
    concurrency: int = 4,
    max_attempts: int = 6,
    backoff_s: float = 2.0,
    max_backoff_s: float = 60.0,
    calls_per_item: int = 1,
    revision: str = "",
    log: Callable[[str], Any] = print,
    sleep: Callable[[float], Any] = time.sleep,
) -> list[dict]:
    """One record per query, in query order. Successful responses are cached as they arrive; failures are not,
    so a rerun requests exactly the items that are still missing.

    ``calls_per_item`` reproduces an upstream quirk: its retry loop had no ``break``, so every item was sent
    several times and the last response kept."""
    if "{question}" not in template:
        raise ValueError(f"template {template!r} must contain {{question}}")
    if max_attempts < 1 or calls_per_item < 1:
        raise ValueError("max_attempts and calls_per_item must be at least 1")
    cache = WriteAheadCache(cache_path)
    label = f"{model.provider}/{model.model}"

    # imported here, not at the top: the Snakemake process imports this module only for missing_key
    from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

    exponential = wait_exponential(multiplier=backoff_s, max=max_backoff_s)

    def backoff(state: RetryCallState) -> float:
        """The exponential wait, or the server's ``retry_after`` where longer; never over ``max_backoff_s``."""
        return min(max_backoff_s, max(exponential(state), state.outcome.exception().retry_after or 0.0))

    retrying = Retrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, ApiError) and exc.retryable),
        stop=stop_after_attempt(max_attempts),
        wait=backoff,
        sleep=sleep,
        reraise=True,  # the last ApiError itself, not tenacity's RetryError
    )

    def request(item: Any, text: str, image: bytes | None, mime: str) -> tuple[tuple[str, str] | ApiError, int]:
        """Try until the first success; returns (answer or last error, requests sent)."""

        def log_retry(state: RetryCallState) -> None:
            reason = str(state.outcome.exception())[:REASON_CHARS]
            retry = f"retry {state.attempt_number}/{max_attempts - 1} in {state.upcoming_sleep:.1f}s"
            log(f"{label}: item {item}: {reason}; {retry}")

        attempts = retrying.copy(before_sleep=log_retry)
        try:
            answer = attempts(model.ask, text, image, mime)
        except ApiError as exc:  # not retryable, or the last attempt's
            return exc, attempts.statistics["attempt_number"]
        return answer, attempts.statistics["attempt_number"]

    def run_one(query: dict) -> tuple[dict, int]:
        text = render(template, query["question"])
        record = {**base_record(query, revision), "prompt": text}
        if query.get("skip"):
            return {**record, "status": "skipped_image", "reason": query["skip"]}, 0
        path = query.get("path")
        image, mime = image_payload(path) if path else (None, "image/jpeg")
        image_sha = hashlib.sha256(image).hexdigest() if image is not None else None
        sent = 0
        for call in range(calls_per_item):
            key = _cache_key(model, text, image_sha, mime, call)
            answer = cache.entries.get(key)
            if answer is None:
                result, n = request(query["item"], text, image, mime)
                sent += n
                if isinstance(result, ApiError):
                    reason = str(result)[:REASON_CHARS]
                    log(f"{label}: item {query['item']}: api_error after {n} request(s): {reason}")
                    return {**record, "status": "api_error", "reason": reason}, sent
                answer = list(result)
                cache.put(key, answer)  # written ahead, before anything else happens to this item
        output, reported = answer
        return {**record, "status": "ok", "output": output, "pred": output, "model_reported": reported}, sent

    log(f"{label}: {len(queries)} queries, {len(cache.entries)} cached responses in {cache_path}")
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(run_one, query) for query in queries]
        try:
            results = [future.result() for future in futures]
        except BaseException:
            pool.shutdown(cancel_futures=True)  # stop paying for requests once the run is lost
            raise
    records = [record for record, _ in results]
    requested = [sent for (record, sent) in results if record["status"] != "skipped_image"]
    statuses = [record["status"] for record in records]
    log(
        f"{label}: {requested.count(0)} items from the cache, {sum(requested)} requests sent; "
        f"{statuses.count('ok')} ok, {statuses.count('api_error')} api_error, {statuses.count('skipped_image')} skipped"
    )
    return records
