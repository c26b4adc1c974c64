"""Chat templates and answer extraction (docs/protocol.md#chat-templates, docs/protocol.md#answer-extraction).
Templates are data: they live in the model registry of the config, so editing one model's template reruns only that
model's jobs."""

from __future__ import annotations


def render(template: str, question: str) -> str:
    if "{question}" not in template:
        raise ValueError(f"chat template {template!r} has no {{question}} slot")
    return template.replace("{question}", question)


def extract_answer(decoded: str, marker: str) -> str:
    """Text after the last ``marker`` ('ASSISTANT:', '[/INST]', 'Answer:'), stripped — upstream ``pred``."""
    return decoded.split(marker)[-1].strip()
