"""Scoring rules for zero-shot classification outputs (docs/protocol.md#scoring-rules).

``substring`` is the paper's rule, quirks included: ``label.lower() in pred.lower()`` with no word boundaries, so
'ant' counts inside 'elephant'. ``word_boundary`` is a stricter extra column: the label must appear as whole words.
"""

from __future__ import annotations

import re

from .intervals import attach, row_ids


def substring_correct(label: str, pred: str) -> bool:
    return label.lower() in pred.lower()


def word_boundary_correct(label: str, pred: str) -> bool:
    pattern = r"(?<!\w)" + re.escape(label.lower()) + r"(?!\w)"
    return re.search(pattern, pred.lower()) is not None


def exact_correct(label: str, pred: str) -> bool:
    """Fine-tuned LLaVA (docs/protocol.md#exact-match): the stripped generation equals the label,
    case-insensitively; nothing else."""
    return label.lower() == pred.strip().lower()


def blip_caption_correct(label: str, caption: str) -> bool:
    """Fine-tuned BLIP-2 (docs/protocol.md#blip-2-caption-rule): the label without parentheses is contained in the
    caption. Labels with characters the training normaliser removed ('.', ':', …) can never match, as upstream."""
    return label.replace("(", "").replace(")", "").lower() in caption.lower()


RULES = {"substring": substring_correct, "exact": exact_correct, "blip_caption": blip_caption_correct}


def upstream_pred(pred: str, resplit_marker: str | None) -> str:
    """The scoring notebook re-splits Mistral predictions once more on the first '[/INST]' still present."""
    if resplit_marker and resplit_marker in pred:
        return pred.split(resplit_marker)[1]
    return pred


def not_evaluated(rows: list[dict]) -> dict[str, int]:
    """How many rows were not evaluated, by status (skipped_image, context_overflow, api_error, ...)."""
    from collections import Counter

    return dict(Counter(r.get("status", "unknown") for r in rows if r.get("status") != "ok"))


def na_reason(rows: list[dict], counts: dict[str, int]) -> str:
    """The N/A note of a cell none of whose rows was evaluated: the commonest status and its first reason."""
    status, count = max(counts.items(), key=lambda kv: kv[1])
    example = next(r.get("reason", "") for r in rows if r.get("status") == status)
    return f"N/A: {status} for {count} of {len(rows)} items (first: {example})"


def score_outputs(rows: list[dict], resplit_marker: str | None = None, rule: str = "substring") -> dict:
    """Accuracy in percent over the evaluated rows; rows that could not be evaluated are counted by reason.

    Upstream divides by ``N + 1e-9``; the same expression is used so that values agree to the last digit.
    """
    evaluated = [r for r in rows if r.get("status") == "ok"]
    n = len(evaluated)
    result = {"n_items": len(rows), "n_evaluated": n, "not_evaluated": not_evaluated(rows)}
    # an empty answer is an answer, scored wrong (an API's HTTP 200 with "", as upstream kept it); the page says so
    result["n_empty_answers"] = sum(not r["pred"].strip() for r in evaluated)
    if n == 0:
        result.update(accuracy=None, accuracy_word_boundary=None, na_reason=na_reason(rows, result["not_evaluated"]))
        return result
    preds = [(r["label"], upstream_pred(r["pred"], resplit_marker)) for r in evaluated]
    correct = [RULES[rule](l, p) for l, p in preds]
    result["accuracy"] = 100 * sum(correct) / (n + 1e-9)
    result["accuracy_word_boundary"] = 100 * sum(word_boundary_correct(l, p) for l, p in preds) / (n + 1e-9)
    return attach(result, row_ids(evaluated), {"accuracy": correct})


# --- synonyms (docs/protocol.md#synonym-rule, Table 8) -------------------------------------------------------------


def parse_synonyms(text: str, source: str = "synonyms file") -> dict[int, list[str]]:
    """yrevar's imagenet1000_clsidx_to_labels.txt: a Python dict literal {index: 'name, other name, …'}."""
    import ast

    try:
        table = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"{source}: not a Python dict literal ({err})") from None
    if not isinstance(table, dict) or not all(isinstance(k, int) and isinstance(v, str) for k, v in table.items()):
        raise ValueError(f"{source}: expected {{class index: 'name, name, …'}}")
    return {k: [n for n in v.split(", ") if n] for k, v in table.items()}


def score_synonyms(rows: list[dict], class_index: list[int], classes: list[str], synonyms: dict[int, list[str]],
                   include_class_name: bool = True, resplit_marker: str | None = None) -> dict:
    """Correct when any name of the row's class occurs in the prediction (substring, case-insensitive): the class
    list's name and the synonyms of the row's class index. ``class_index``: per row, its class index."""
    evaluated = [(r, k) for r, k in zip(rows, class_index) if r.get("status") == "ok"]
    result = {"n_items": len(rows), "n_evaluated": len(evaluated)}
    if not evaluated:
        return {**result, "accuracy": None, "na_reason": "N/A: no item evaluated"}
    correct = []
    for row, k in evaluated:
        if k not in synonyms:
            raise ValueError(f"class index {k} ({classes[k]!r}) has no entry in the synonyms file")
        names = synonyms[k] + ([classes[k]] if include_class_name else [])
        pred = upstream_pred(row["pred"], resplit_marker)
        correct.append(any(substring_correct(name, pred) for name in names))
    without = score_outputs(rows, resplit_marker)
    result["accuracy"] = 100 * sum(correct) / (len(evaluated) + 1e-9)
    result["accuracy_without_synonyms"] = without["accuracy"]
    result["improvement_delta"] = result["accuracy"] - result["accuracy_without_synonyms"]
    per_item = {"accuracy": correct, "accuracy_without_synonyms": without["per_item"]["accuracy"]}
    return attach(result, row_ids([r for r, _ in evaluated]), per_item)


# --- probabilistic inference (docs/protocol.md#probabilistic-inference-scores) -----------------------------------


def _class_sums(token_logprobs, offsets):
    import numpy as np

    return np.add.reduceat(token_logprobs, offsets[:-1], axis=-1)


def _top_k(scores, k: int = 5):
    """Upstream: the last k indices of NumPy's default ascending argsort, reversed (fixes the tie order)."""
    import numpy as np

    return np.argsort(scores, axis=-1)[:, -k:][:, ::-1]


def _accuracies(scores, labels):
    """(top-1 %, top-5 %, each item's top-1 correctness) from one sort of the scores."""
    top = _top_k(scores)
    correct = top[:, 0] == labels
    return 100 * float(correct.mean()), 100 * float((top == labels[:, None]).any(axis=1).mean()), correct


def _best_of_grid(scored: dict) -> str:
    """The first grid value with the best top-1 accuracy (upstream's choice on ties)."""
    return max(scored, key=lambda a: scored[a][0])


def score_loglik(records: list[dict], arrays: dict, alphas=range(9), text_prior_alphas=None) -> dict:
    """Top-1 (and top-5) accuracy of Sum, Avg and CFG scores over the evaluated items.

    CFG as the upstream code computes it: G_α(c) = Σ_k [α·ℓ_k(c|x) + (1−α)·ℓ̄_k(c)], with ℓ̄ the mean over the
    evaluated images; the reported number is the best α on the same images (the whole grid is kept). With a text-only
    prior in ``arrays['prior']`` the paper's variant is added: t·avg(c|x, prompt) + (1−t)·avg(c|prompt). Each
    accuracy's per-item outcomes (at the chosen α: the interval leaves out the choice's own optimism) feed its
    interval.
    """
    import numpy as np

    ok = np.array([r.get("status") == "ok" for r in records])
    result: dict = {"n_items": len(records), "n_evaluated": int(ok.sum()), "not_evaluated": not_evaluated(records)}
    if not ok.any():
        result["na_reason"] = na_reason(records, result["not_evaluated"])
        return result
    tokens, offsets = arrays["token_logprobs"][ok].astype(np.float64), arrays["class_offsets"]
    labels, lengths = arrays["label_index"][ok], np.diff(offsets)
    sums = _class_sums(tokens, offsets)
    correct = {}
    result["accuracy_sum"], result["top5_sum"], correct["accuracy_sum"] = _accuracies(sums, labels)
    result["accuracy_avg"], result["top5_avg"], correct["accuracy_avg"] = _accuracies(sums / lengths, labels)
    prior_sums = _class_sums(tokens.mean(axis=0, keepdims=True), offsets)
    scored = {str(a): _accuracies(a * sums + (1 - a) * prior_sums, labels) for a in alphas}
    best = _best_of_grid(scored)
    grid = {a: s[0] for a, s in scored.items()}
    result.update(accuracy_cfg=grid[best], cfg_best_alpha=float(best), cfg_grid=grid)
    correct["accuracy_cfg"] = scored[best][2]
    if "prior" in arrays and text_prior_alphas is not None:
        prior_avg = _class_sums(arrays["prior"][None].astype(np.float64), offsets) / lengths
        scored = {str(t): _accuracies(t * sums / lengths + (1 - t) * prior_avg, labels) for t in text_prior_alphas}
        best = _best_of_grid(scored)
        paper_grid = {t: s[0] for t, s in scored.items()}
        result.update(
            accuracy_cfg_text_prior=paper_grid[best], cfg_text_prior_best=float(best), cfg_text_prior_grid=paper_grid
        )
        correct["accuracy_cfg_text_prior"] = scored[best][2]
    return attach(result, [row for row, keep in zip(row_ids(records), ok) if keep], correct)
