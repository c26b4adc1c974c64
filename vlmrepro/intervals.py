"""95 % bootstrap confidence intervals over items (the paper reports none; docs/protocol.md#confidence-intervals).

A score file keeps, per accuracy metric, whether each evaluated item was correct (``per_item``: the items' manifest
``row`` and one 0/1 list per metric) and the metric's interval (``<metric>_ci95``). Findings compare two scores with
a paired interval of their difference over the items both evaluated. Resampling is seeded, so an interval is the
same on every machine; items are resampled, not classes.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


def _bootstrap(samples: tuple, statistic, paired: bool) -> list[float] | None:
    from scipy.stats import bootstrap

    if any(len(s) < 2 for s in samples):
        return None  # one item has no spread to resample
    result = bootstrap(
        samples,
        statistic,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",  # BCa's jackknife is quadratic in the items: minutes for ImageNet's 50,000
        paired=paired,
        vectorized=True,
        batch=100,  # bounds memory: 100 resamples of 50,000 items at a time
        random_state=np.random.default_rng(SEED),
    )
    low, high = result.confidence_interval
    return [float(low), float(high)]


def _percent_mean(x, axis=-1):
    return 100 * np.mean(x, axis=axis)


def _percent_difference(x, y, axis=-1):
    return _percent_mean(x, axis) - _percent_mean(y, axis)


def accuracy_interval(correct) -> list[float] | None:
    """95 % interval of 100 × the mean of a 0/1 vector."""
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) and (correct == correct[0]).all():
        return [100 * float(correct[0])] * 2  # every resample is identical
    return _bootstrap((correct,), _percent_mean, paired=False)


def row_ids(records: list[dict]) -> list[int]:
    """The manifest row of each record (what pairs two scores of the same images); position where none is kept."""
    return [r.get("row", i) for i, r in enumerate(records)]


def attach(result: dict, rows: list, correct: dict[str, list]) -> dict:
    """``result`` with ``per_item`` (rows and the 0/1 list of each metric) and each metric's ``<metric>_ci95``."""
    result["per_item"] = {"row": [int(r) for r in rows], **{m: [int(c) for c in v] for m, v in correct.items()}}
    for metric, values in correct.items():
        result[f"{metric}_ci95"] = accuracy_interval(values)
    return result


def per_item(score: dict, metric: str) -> dict[int, int] | None:
    """{row: 0/1} of one metric of a score file, or None where the file keeps no per-item outcomes."""
    items = score.get("per_item") or {}
    if metric not in items:
        return None
    return dict(zip(items["row"], items[metric]))


def difference_interval(left: dict[int, int], right: dict[int, int]) -> dict:
    """Interval of accuracy(left) − accuracy(right), in points: paired over the rows both evaluated (the same
    images), else, where they share none, from independent resamples of each."""
    common = sorted(left.keys() & right.keys())
    if common:
        a = np.array([left[r] for r in common], dtype=np.float64)
        b = np.array([right[r] for r in common], dtype=np.float64)
        ci = _bootstrap((a, b), _percent_difference, paired=True)
        if ci is None and len(common) == 1:
            ci = [100 * (a[0] - b[0])] * 2
        return {"ci95": ci, "paired_items": len(common)}
    a, b = (np.fromiter(d.values(), dtype=np.float64) for d in (left, right))
    ci = _bootstrap((a, b), _percent_difference, paired=False)
    return {"ci95": ci, "paired_items": 0}


def share_interval(start: dict[int, int], end: dict[int, int], value: dict[int, int]) -> dict:
    """Interval of the share of the gap from ``start`` to ``end`` that ``value`` closes, paired over common rows."""
    common = sorted(start.keys() & end.keys() & value.keys())
    if len(common) < 2:
        return {"ci95": None, "paired_items": len(common)}
    s, e, v = (np.array([d[r] for r in common], dtype=np.float64) for d in (start, end, value))

    def share(x, y, z, axis=-1):
        gap = np.mean(y, axis=axis) - np.mean(x, axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.mean(z, axis=axis) - np.mean(x, axis=axis)) / gap

    return {"ci95": _bootstrap((s, e, v), share, paired=True), "paired_items": len(common)}
