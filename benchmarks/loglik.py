"""Probabilistic inference over 1,000 class names (5 tokens each): the upstream per-class, per-token loop from a
copy of the cached image+prompt context, against ours (the context once, all classes' tokens packed into one pass
per chunk over the uncopied cache). Prints seconds per image, ratio, peak memory and the largest score difference.

    python benchmarks/loglik.py                # CPU, tiny LLaVA
    python benchmarks/loglik.py --size full    # GPU, LLaVA-1.5-7B architecture, random weights
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import arguments, attach_random_weights, llava_dir, print_table, timed, work_dir, write_jpegs  # noqa: E402

from vlmrepro.evaluate import load_rgb  # noqa: E402
from vlmrepro.loglik import continuation_logprobs, upstream_continuation_logprobs  # noqa: E402
from vlmrepro.models import VisionLanguageModel  # noqa: E402

CONTEXT = "USER: <image>\nWhat type of object is in this photo?\nASSISTANT: The photo features a"


def main() -> None:
    args = arguments(
        __doc__,
        classes=dict(type=int, default=1000),
        class_tokens=dict(type=int, default=5),
        upstream_classes=dict(type=int, default=None, help="classes the upstream loop is timed on (extrapolated)"),
        chunk=dict(type=int, default=250),
    )
    folder = work_dir(args)
    vlm = VisionLanguageModel(llava_dir(folder, args.size), "llava", dtype="bfloat16", device=args.device,
                              attention="sdpa")  # fmt: skip
    attach_random_weights(vlm)
    image = load_rgb(write_jpegs(folder / "jpeg", 1)[0])
    rng = np.random.default_rng(0)
    vocab = len(vlm.tokenizer)
    class_ids = [rng.integers(3, vocab, args.class_tokens).tolist() for _ in range(args.classes)]
    sampled = args.upstream_classes or (10 if args.size == "full" else args.classes)

    continuation_logprobs(vlm, image, CONTEXT, class_ids[:8], args.chunk)  # warm-up
    reference, seconds_up, memory_up = timed(
        lambda: upstream_continuation_logprobs(vlm, image, CONTEXT, class_ids[:sampled]), args.device
    )
    ours, seconds, memory = timed(lambda: continuation_logprobs(vlm, image, CONTEXT, class_ids, args.chunk), args.device)
    per_image_up = seconds_up * args.classes / sampled
    difference = max(float(np.abs(a.sum() - b.sum())) for a, b in zip(ours, reference))
    scale = float(np.mean([abs(r.sum()) for r in reference]))
    extrapolated = f" (timed on {sampled} classes)" if sampled < args.classes else ""
    rows = [
        {"name": f"upstream: per class, per token, cache copied{extrapolated}", "unit": "images/s",
         "rate": 1 / per_image_up, "memory": memory_up, "notes": f"{per_image_up:.3g} s per image"},
        {"name": f"ours: packed classes, {args.chunk} per pass, context cache shared", "unit": "images/s",
         "rate": 1 / seconds, "memory": memory,
         "notes": f"{seconds:.3g} s per image; max |score difference| {difference:.3g} (scores ~{scale:.3g})"},
    ]  # fmt: skip
    print_table(f"Probabilistic inference, {args.classes} classes x {args.class_tokens} tokens", args, rows)


if __name__ == "__main__":
    main()
