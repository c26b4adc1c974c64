"""Chat templates and answer extraction (docs/protocol.md#chat-templates, docs/protocol.md#answer-extraction).
Templates are data: they live in the model registry of the config, so editing one model's template reruns only that
model's jobs."""

from __future__ import annotations


def render(template: str, question: str | None = None, label: str | None = None) -> str:
    """``template`` with ``{question}`` filled in, then ``{label}`` (so a question that names ``{label}`` gets it
    too); each only when given. A given question needs its slot, else it would be dropped without a word."""
    if question is not None:
        if "{question}" not in template:
            raise ValueError(f"chat template {template!r} has no {{question}} slot")
        template = template.replace("{question}", question)
    if label is not None:
        template = template.replace("{label}", label)
    return template


def extract_answer(decoded: str, marker: str) -> str:
    """Text after the last ``marker`` ('ASSISTANT:', '[/INST]', 'Answer:'), stripped — upstream ``pred``."""
    return decoded.split(marker)[-1].strip()
