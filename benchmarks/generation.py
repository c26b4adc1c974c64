"""Open-world generation: the upstream loop (HF generate, batches of 8 in dataset order, images decoded in the
loop) against ours (batch from free memory, length-sorted blocks, decoding threads), same images, same prompt,
20 forced new tokens. Prints images/s, ratio, MFU and peak memory, and how many answers are identical.

    python benchmarks/generation.py                 # CPU, tiny LLaVA: ratios only
    python benchmarks/generation.py --size full     # GPU, LLaVA-1.5-7B architecture, random weights
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    Table,
    arguments,
    attach_random_weights,
    llava_dir,
    llava_flop_per_image,
    peak_tflops,
    timed,
    work_dir,
    write_jpegs,
)

from vlmrepro.evaluate import load_rgb, run_generation  # noqa: E402
from vlmrepro.memory import resolve_batch_size  # noqa: E402
from vlmrepro.models import VisionLanguageModel  # noqa: E402
from vlmrepro.prompts import render  # noqa: E402

TEMPLATE, MARKER = "USER: <image>\n{question}\nASSISTANT:", "ASSISTANT:"
QUESTION = "What type of object is in this photo?"
NEW_TOKENS = 20


@torch.inference_mode()
def upstream_loop(vlm, paths: list[str], batch_size: int = 8) -> list[str]:
    """As upstream main_results/main.py runs a LLaVA model: per batch, open the images, run the processor, generate,
    decode the whole sequences."""
    texts = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        inputs = vlm.encode([load_rgb(p) for p in batch], [render(TEMPLATE, QUESTION)] * len(batch))
        output = vlm.model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        texts.extend(vlm.processor.batch_decode(output, skip_special_tokens=True))
    return texts


def vllm_row(args, vlm, queries, flop, peak, items) -> dict:
    """The vLLM backend on the same images and prompts, its engine handed the whole job in one call. Its random
    weights (load_format dummy) are not the transformers model's, so outputs are not compared."""
    import gc

    from vlmrepro.vllm_backend import VllmModel

    vlm._model = None  # the transformers copy leaves the GPU to the engine
    gc.collect()
    torch.cuda.empty_cache()
    served = VllmModel(vlm.model_dir, "llava", device=args.device, name="bench", gpu_memory_utilization=0.85,
                       load_format="dummy")  # fmt: skip
    run = lambda: run_generation(served, queries, TEMPLATE, MARKER, NEW_TOKENS, len(queries), "bench",  # noqa: E731
                                 log=lambda _: None, sort_block=len(queries), min_new_tokens=NEW_TOKENS)  # fmt: skip
    run()  # warm-up: engine start, CUDA graphs
    _, seconds, memory = timed(run, args.device)
    rate = items / seconds
    return {"name": "vLLM backend, whole job in one call (random weights)", "rate": rate, "memory": memory,
            "notes": "other random weights: outputs not compared",
            "mfu": rate * flop / (peak * 1e12) if peak else None}  # fmt: skip


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process (each new static-cache shape adds some)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def main() -> None:
    args = arguments(
        __doc__,
        workers=dict(type=int, default=4, help="decoding threads of our path"),
        batch_size=dict(default="auto", help="our path's batch (default: from free memory)"),
        backend=dict(choices=("transformers", "vllm"), default="transformers",
                     help="vllm: also time the vLLM backend (random weights, load_format dummy; vllm installed)"),
    )  # fmt: skip
    folder = work_dir(args)
    wanted = args.items or (512 if args.size == "full" else 64)
    vlm = VisionLanguageModel(llava_dir(folder, args.size), "llava", dtype="bfloat16", device=args.device)
    attach_random_weights(vlm)
    vlm.model.generation_config.min_new_tokens = NEW_TOKENS  # every path generates exactly 20 tokens
    prompt = render(TEMPLATE, QUESTION)
    run = {"batch_size": args.batch_size, "max_batch_size": 256, "max_new_tokens": NEW_TOKENS, "model": vlm.model_dir}
    batch_size = resolve_batch_size(vlm, run, [prompt]) if args.batch_size == "auto" else int(args.batch_size)
    cuda = args.device.startswith("cuda")
    # on a GPU whole batches only: a last, smaller batch would compile the static path for a second shape
    items = max(batch_size, wanted // batch_size * batch_size) if cuda else wanted
    paths = write_jpegs(folder / "jpeg", items)
    queries = [{"item": i, "row": i, "image": p, "path": p, "label": "x", "question": QUESTION}
               for i, p in enumerate(paths)]  # fmt: skip
    prompt_tokens = int(vlm.input_lengths(vlm.preprocess([load_rgb(paths[0])], [prompt]))[0])
    flop = llava_flop_per_image(vlm, prompt_tokens, NEW_TOKENS)
    peak = peak_tflops(args)
    table = Table(f"Open-world generation, {NEW_TOKENS} new tokens, {items} JPEG images "
                  f"({flop / 1e9:.4g} GFLOP per image)", args, "images/s")  # fmt: skip

    def add(name: str, seconds: float, memory: float, notes: str = "") -> None:
        rate = items / seconds
        table.add({"name": name, "rate": rate, "memory": memory, "notes": notes,
                   "mfu": rate * flop / (peak * 1e12) if peak and cuda else None})  # fmt: skip

    upstream_loop(vlm, paths[:8])  # warm-up (kernels, allocator) for both paths
    reference, seconds, memory = timed(lambda: upstream_loop(vlm, paths), args.device)
    add("upstream: HF generate, batch 8, dataset order", seconds, memory)

    def ours_with(static: bool, part=slice(None)):
        vlm.static_cache = static  # kv_cache static / dynamic (models.<m>.kv_cache)
        return run_generation(vlm, queries[part], TEMPLATE, MARKER, NEW_TOKENS, batch_size, "bench",
                              log=lambda _: None, sort_block=1024, loader_workers=args.workers)  # fmt: skip

    path = f"ours: batch {batch_size} ({args.batch_size}), sorted blocks, {args.workers} decoding threads"
    ours, seconds, memory = timed(lambda: ours_with(False), args.device)
    add(f"{path}, dynamic KV cache", seconds, memory, f"{sum(r['output'] == t for r, t in zip(ours, reference))}/{items} "
        "outputs identical")  # fmt: skip
    ours_with(True, slice(0, batch_size))  # warm-up on one batch: on a GPU the decoding step compiles for its shape
    static, seconds, memory = timed(lambda: ours_with(True), args.device)
    compiled = f"compiled, {compiled_graphs()} graph(s)" if cuda else "uncompiled on the CPU"
    batches = -(-items // batch_size)
    add(f"{path}, static KV cache ({compiled})", seconds, memory,
        f"{sum(r['output'] == t for r, t in zip(static, reference))}/{items} outputs identical; {batches} batch(es) "
        f"served by {vlm.static_cache_allocations} static cache(s) of {vlm.static_cache_len} positions")  # fmt: skip
    if args.backend == "vllm":
        table.add(vllm_row(args, vlm, queries, flop, peak, items))


if __name__ == "__main__":
    main()
