"""Bookkeeping steps that run inside the Snakemake process (``run:`` rules: planning, scoring, tables). They take
milliseconds, so a subprocess per job would cost more than the work; each logs into its rule's log file."""

from __future__ import annotations

import contextlib
import traceback

from .io import atomic_dir, atomic_path, read_json, read_jsonl, write_json, write_jsonl, write_text
from .registry import score_file


@contextlib.contextmanager
def _logged(log_path):
    with open(log_path, "w") as log:
        try:
            yield log
        except BaseException:
            traceback.print_exc(file=log)
            raise


def prepare_classes(input, output, log) -> None:
    from .datasets import disguised_duplicate_classes, duplicate_classes, load_class_list

    with _logged(log[0]) as out:
        classes = load_class_list(input[0])
        for name, indices in duplicate_classes(classes).items():
            # ImageNet lists 'missile' and 'sunglasses' twice; kept, as upstream does
            # (docs/protocol.md#class-name-facts-that-change-scores)
            print(f"duplicate class name {name!r} at indices {indices}", file=out)
        for name, indices in disguised_duplicate_classes(classes).items():
            spelled = ", ".join(repr(classes[i]) for i in indices)
            print(f"class names {spelled} at indices {indices} differ only in case, spaces, Unicode form or "
                  f"invisible characters (all read as {name!r}); kept as distinct classes", file=out)  # fmt: skip
        write_json(output[0], classes)


def plan_queries(input, output, params, log) -> None:
    from . import queries
    from .datasets import load_class_list

    with _logged(log[0]) as out:
        p = params.plan
        planned = queries.plan_queries(
            read_jsonl(input.rows),
            load_class_list(input.classes),
            p["question"],
            p["seed"],
            candidates=p["candidates"],
            order=p["order"],
            limit=p["limit"],
            shuffle=p["shuffle"],
            question_from=p["question_from"],
        )
        write_jsonl(output[0], planned)
        print(f"{len(planned)} queries", file=out)


def _merged_meta(paths) -> dict:
    """The shards' metadata as one job's: their shared settings, the shard count and the summed seconds."""
    metas = [read_json(path) for path in paths]
    merged = {k: v for k, v in metas[0].items() if k not in ("shard", "items", "seconds", "batch_size_used")}
    merged.update(shards=len(metas), seconds=round(sum(m["seconds"] for m in metas), 2))
    if any("batch_size_used" in m for m in metas):
        merged["batch_sizes_used"] = sorted({m["batch_size_used"] for m in metas if "batch_size_used" in m})
    return merged


def gather_outputs(input, output, log) -> None:
    """Shards in order: their rows concatenated (byte-identical to one job's), their settings and timings merged."""
    with _logged(log[0]) as out:
        rows = [row for path in input.rows for row in read_jsonl(path)]
        write_jsonl(output.rows, rows)
        write_json(output.meta, _merged_meta(input.meta))
        print(f"{len(rows)} rows from {len(input.meta)} shard(s)", file=out)


LOGLIK_PER_ITEM = ("token_logprobs", "label_index")  # the other arrays (class offsets, text prior) are shared


def gather_loglik(input, output, log) -> None:
    """Shards of probabilistic inference in order: rows concatenated (byte-identical to one job's), the per-item
    arrays stacked, the shared ones (the same in every shard, checked) kept once."""
    import numpy as np

    with _logged(log[0]) as out:
        rows = [row for path in input.rows for row in read_jsonl(path)]
        parts = []
        for path in input.logprobs:
            with np.load(path) as npz:
                parts.append(dict(npz))
        arrays = {key: np.concatenate([p[key] for p in parts]) for key in LOGLIK_PER_ITEM}
        for key in sorted(set(parts[0]) - set(LOGLIK_PER_ITEM)):
            for path, part in zip(input.logprobs[1:], parts[1:]):
                if not np.array_equal(part[key], parts[0][key]):
                    raise ValueError(f"{path}: {key} differs from {input.logprobs[0]}'s (shards of different runs?)")
            arrays[key] = parts[0][key]
        with atomic_path(output.logprobs) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **arrays)
        write_jsonl(output.rows, rows)
        write_json(output.meta, _merged_meta(input.meta))
        print(f"{len(rows)} rows from {len(input.meta)} shard(s)", file=out)


def gather_features(input, output, log) -> None:
    """The jobs' feature files moved into one folder (they are numbered over the whole run) with one index."""
    import os
    from pathlib import Path

    from .features import merge_indexes

    with _logged(log[0]) as out:
        parts = [read_json(Path(folder) / "index.json") for folder in input]
        with atomic_dir(output[0]) as work:
            work.mkdir(parents=True)
            for folder, part in zip(input, parts):
                for shard in part["shards"]:
                    os.link(Path(folder) / shard["file"], work / shard["file"])  # no copy of large files
            index = merge_indexes(parts)
            write_json(work / "index.json", index)
        print(f"{index['n_items']} items in {len(index['shards'])} files from {len(parts)} job(s)", file=out)


def score(input, output, params, log) -> None:
    from .imagewikiqa import score_mcq
    from .scoring import score_outputs

    with _logged(log[0]) as out:
        rows = read_jsonl(input[0])
        if params.rule == "mcq":
            result = score_mcq(rows, seed=params.mcq["seed"])
        else:
            result = score_outputs(rows, resplit_marker=params.resplit, rule=params.rule)
        if "epochs" in input.keys():  # evaluated after every epoch in training: the best epoch's weights were kept
            trained = read_json(input.epochs)
            result.update({k: trained[k] for k in ("epochs", "best_epoch", "accuracy_last_epoch") if k in trained})
        if "meta" in input.keys():  # CLIP: class prompts its tokenizer cut, scored cut as upstream's was
            result["truncated_classes"] = read_json(input.meta)["truncated_classes"]
        write_json(output[0], result)
        print(result, file=out)


def score_loglik(input, output, params, log) -> None:
    import numpy as np

    from . import scoring

    with _logged(log[0]) as out:
        p = params.scoring
        with np.load(input.logprobs) as npz:
            arrays = dict(npz)
        result = scoring.score_loglik(
            read_jsonl(input.rows),
            arrays,
            alphas=p["alphas"],
            text_prior_alphas=p["alphas"] if p["text_prior"] else None,
        )
        write_json(output[0], result)
        print(result, file=out)


def build_table(input, output, params, log) -> None:
    from . import tables
    from .paper import load_paper_results

    with _logged(log[0]) as out:
        scores = {path: read_json(path) for path in input}
        cells = [dict(c) for c in params.cells]
        for cell in cells:
            if "not_run" not in cell:
                cell["score"] = scores[score_file(cell["model"], cell["dataset"], cell["setting"])]
        frame = tables.build_table(cells, load_paper_results(), params.paper_table, params.not_reproduced)
        with atomic_path(output[0]) as tmp:
            frame.to_csv(tmp, index=False)
        print(frame.to_string(), file=out)


def report_index(input, output, log) -> None:
    from .report import index_html

    with _logged(log[0]):
        write_text(output[0], index_html(list(input.pages), list(input.tables), input.summary))


def correlate_frequency(input, output, params, log) -> None:
    from .frequency import combine, correlate, per_class_accuracy, probe_class_accuracy

    with _logged(log[0]) as out:
        counts = {corpus: dict(map(tuple, read_json(input[corpus]))) for corpus in ("pretrain", "instruct")}
        if str(input.outputs).endswith(".json"):  # a probe's best-epoch predictions
            accuracy = probe_class_accuracy(read_json(input.outputs), read_json(input.classes))
        else:
            accuracy = per_class_accuracy(read_jsonl(input.outputs), cut_at_hyphen=params.cut_at_hyphen)
        result = correlate(combine(counts["pretrain"], counts["instruct"]), accuracy)
        result["per_stage"] = {
            corpus: {k: v for k, v in correlate(counts[corpus], accuracy).items() if k.endswith("_r") or k == "na_reason"}
            for corpus in ("pretrain", "instruct")
        }
        result["n_items"] = result["n_evaluated"] = len(accuracy)
        write_json(output[0], result)
        print({k: v for k, v in result.items() if k not in ("pairs", "bins")}, file=out)


def score_baseline(input, output, params, log) -> None:
    from .datasets import dataset_statistics
    from .imagewikiqa import baselines

    with _logged(log[0]) as out:
        if params.baseline == "dataset_statistics":
            result = dataset_statistics(read_jsonl(input.rows), read_json(input.classes), params.eval_split)
        else:
            result = baselines(read_jsonl(input.rows))[params.baseline]
        write_json(output[0], result)
        print(result, file=out)


def rescore_synonyms(input, output, params, log) -> None:
    from .datasets import first_indices
    from .scoring import parse_synonyms, score_synonyms

    with _logged(log[0]) as out:
        classes = read_json(input.classes)
        first = first_indices(classes)
        queries = {q["item"]: q for q in read_jsonl(input.queries)}
        rows = read_jsonl(input.outputs)
        # the row's own class index where the manifest has one (ImageNet's duplicated names stay apart)
        index = [queries[r["item"]].get("label_idx", first[r["label"]]) for r in rows]
        with open(input.synonyms, encoding="utf-8") as handle:
            synonyms = parse_synonyms(handle.read(), source=input.synonyms)
        result = score_synonyms(
            rows, index, classes, synonyms, include_class_name=params.include_class_name, resplit_marker=params.resplit
        )
        write_json(output[0], result)
        print(result, file=out)


def build_mcq_manifest(input, output, params, log) -> None:
    from .imagewikiqa import LETTERS, read_questions, resolve_by_file_name

    with _logged(log[0]) as out:
        rows, report = resolve_by_file_name(read_questions(input.questions), params.image_dir, params.prefix)
        write_jsonl(output.manifest, rows)
        write_json(output.classes, LETTERS)
        write_json(output.report, report)
        print(f"{report['n_missing_images']} of {report['n_rows']} images not found in {params.image_dir}", file=out)


def make_synthetic_synonyms(input, output, log) -> None:
    """Demo stand-in for the ImageNet synonym list: each '<colour> <shape>' class also answers to other names; a
    world's class to its family name (the generic word its captions use for it)."""
    from .datasets import SYNTHETIC_SYNONYMS

    with _logged(log[0]):
        classes = read_json(input.classes)
        if "world" in input.keys():
            family = {c["name"]: c["family"] for c in read_json(input.world)}
            table = {i: f"{name}, {family[name]}" for i, name in enumerate(classes)}
        else:
            table = {}
            for i, name in enumerate(classes):
                colour, shape = name.split(" ", 1)
                table[i] = ", ".join([name, *(f"{colour} {alias}" for alias in SYNTHETIC_SYNONYMS.get(shape, []))])
        write_text(output[0], repr(table) + "\n")


def world_dataset(input, output, params, log) -> None:
    """A classification dataset of a synthetic world: its manifest, or the rows of its first ``n_classes``."""
    with _logged(log[0]) as out:
        classes = read_json(input.classes)
        if params.n_classes:
            if params.n_classes > len(classes):
                raise ValueError(f"{input.classes} has {len(classes)} classes, fewer than n_classes {params.n_classes}")
            classes = classes[: params.n_classes]
        kept = set(classes)
        rows = [r for r in read_jsonl(input.manifest) if r["label"] in kept]
        write_jsonl(output.manifest, rows)
        write_json(output.classes, classes)
        print(f"{len(rows)} rows of {len(classes)} classes", file=out)


def world_corpus(input, output, log) -> None:
    """A corpus of a synthetic world (``vlm_corpus``: its VLM's captions and conversations; ``wiki_corpus``: its
    text-only facts) under resources/corpora, where the frequency and instruction-mix rules read corpora."""
    with _logged(log[0]) as out:
        records = read_json(input[0])
        write_json(output[0], records)
        print(f"{len(records)} records", file=out)


def check_findings(input, output, params, log) -> None:
    from .findings import evaluate_findings

    with _logged(log[0]) as out:
        scores = {path: read_json(path) for path in input}
        result = evaluate_findings(params.findings, scores)
        write_json(output[0], result)
        for finding in result:
            print(f"{finding['finding']}: {'holds' if finding['holds'] else 'DOES NOT HOLD'}", file=out)
