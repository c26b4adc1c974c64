"""Credentials (hub tokens, API keys) are read from the environment only, cleaned when read, and scrubbed from any
text that leaves a job."""

from __future__ import annotations

import json
import os
import urllib.parse


def read_credential(env: str) -> str | None:
    """``env``'s value without surrounding whitespace, or None when unset or blank. A token file saved with Windows
    line endings leaves a ``\\r`` that HTTP libraries reject in an error quoting the whole header, token included;
    stripping it prevents that. Whitespace or control characters inside the value are refused, naming the
    variable only."""
    value = os.environ.get(env, "").strip()
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise RuntimeError(f"{env} contains whitespace or control characters inside its value: set it to the bare key")
    return value or None


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every form of ``secret`` a server or library may echo (raw, backslash-escaped as in a repr or
    JSON, percent-encoded) replaced by ``***``."""
    if not secret:
        return text
    json_forms = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms = {
        secret,
        secret.encode("unicode_escape").decode("ascii"),
        *json_forms,
        *(form.replace("/", "\\/") for form in json_forms),  # JSON may escape "/" (PHP's and Java's encoders do)
        *(urllib.parse.quote(secret, safe=safe) for safe in ("", "/")),  # quote()'s default keeps "/"
        *(urllib.parse.quote_plus(secret, safe=safe) for safe in ("", "/")),
    }
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text
