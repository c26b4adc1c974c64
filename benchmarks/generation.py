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
    arguments,
    attach_random_weights,
    llava_dir,
    llava_flop_per_image,
    peak_tflops,
    print_table,
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

    import torch

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
    return {"name": "vLLM backend, whole job in one call (random weights)", "unit": "images/s", "rate": rate,
            "memory": memory, "notes": "other random weights: outputs not compared",
            "mfu": rate * flop / (peak * 1e12) if peak else None}  # fmt: skip


def main() -> None:
    args = arguments(
        __doc__,
        workers=dict(type=int, default=4, help="decoding threads of our path"),
        backend=dict(choices=("transformers", "vllm"), default="transformers",
                     help="vllm: also time the vLLM backend (random weights, load_format dummy; vllm installed)"),
    )  # fmt: skip
    folder = work_dir(args)
    items = args.items or (512 if args.size == "full" else 64)
    paths = write_jpegs(folder / "jpeg", items)
    vlm = VisionLanguageModel(llava_dir(folder, args.size), "llava", dtype="bfloat16", device=args.device)
    attach_random_weights(vlm)
    vlm.model.generation_config.min_new_tokens = NEW_TOKENS  # every path generates exactly 20 tokens
    queries = [{"item": i, "row": i, "image": p, "path": p, "label": "x", "question": QUESTION}
               for i, p in enumerate(paths)]  # fmt: skip
    prompt = render(TEMPLATE, QUESTION)
    run = {"batch_size": "auto", "max_batch_size": 256, "max_new_tokens": NEW_TOKENS, "model": vlm.model_dir}
    batch_size = resolve_batch_size(vlm, run, [prompt])
    prompt_tokens = int(vlm.input_lengths(vlm.preprocess([load_rgb(paths[0])], [prompt]))[0])
    flop = llava_flop_per_image(vlm, prompt_tokens, NEW_TOKENS)
    peak = peak_tflops(args)

    upstream_loop(vlm, paths[:8])  # warm-up (kernels, allocator) for both paths
    reference, seconds_up, memory_up = timed(lambda: upstream_loop(vlm, paths), args.device)
    def ours_with(static: bool):
        vlm.static_cache = static  # kv_cache static / dynamic (models.<m>.kv_cache)
        return run_generation(vlm, queries, TEMPLATE, MARKER, NEW_TOKENS, batch_size, "bench", log=lambda _: None,
                              sort_block=1024, loader_workers=args.workers)  # fmt: skip

    ours, seconds, memory = timed(lambda: ours_with(False), args.device)
    ours_with(True)  # warm-up: on a GPU the first static-cache batches compile the decoding step
    static, seconds_static, memory_static = timed(lambda: ours_with(True), args.device)
    same = sum(r["output"] == text for r, text in zip(ours, reference))
    same_static = sum(r["output"] == text for r, text in zip(static, reference))
    path = f"ours: batch {batch_size} (auto), sorted blocks, {args.workers} decoding threads"
    compiled = "compiled decoding step" if args.device.startswith("cuda") else "uncompiled on the CPU"
    rows = []
    for name, secs, mem, notes in (
        ("upstream: HF generate, batch 8, dataset order", seconds_up, memory_up, ""),
        (f"{path}, dynamic KV cache", seconds, memory, f"{same}/{items} outputs identical"),
        (f"{path}, static KV cache ({compiled})", seconds_static, memory_static,
         f"{same_static}/{items} outputs identical"),
    ):  # fmt: skip
        rate = items / secs
        rows.append({"name": name, "unit": "images/s", "rate": rate, "memory": mem, "notes": notes,
                     "mfu": rate * flop / (peak * 1e12) if peak and args.device.startswith("cuda") else None})  # fmt: skip
    if args.backend == "vllm":
        rows.append(vllm_row(args, vlm, queries, flop, peak, items))
    print_table(f"Open-world generation, {NEW_TOKENS} new tokens, {items} JPEG images "
                f"({flop / 1e9:.4g} GFLOP per image)", args, rows)  # fmt: skip


if __name__ == "__main__":
    main()
