"""CLIP zero-shot over 1,000 class prompts, JPEG decoding included: upstream (batches of 32, images opened and
preprocessed in the loop) against ours (DataLoader processes decoding ahead, large batches, fp16 on a GPU).

    python benchmarks/clip.py                  # CPU, tiny CLIP
    python benchmarks/clip.py --size full      # GPU, ViT-L/14-336 architecture, random weights
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Table, arguments, timed, work_dir, write_jpegs  # noqa: E402

from vlmrepro.evaluate import load_rgb, run_clip_zero_shot  # noqa: E402
from vlmrepro.models import ClipModel  # noqa: E402


def clip_dir(folder: Path, size: str) -> Path:
    """open_clip hub layout: the tiny demo CLIP, or ViT-L-14-336's registry config with random fp16 weights."""
    import open_clip
    from safetensors.torch import save_file

    from vlmrepro.demo.tiny import build_tiny

    out = folder / f"clip-{size}"
    if (out / "open_clip_config.json").exists():
        return out
    if size == "tiny":
        build_tiny("open_clip", out, {"image_size": 224})
        return out
    model_cfg = open_clip.get_model_config("ViT-L-14-336")
    model = open_clip.create_model("ViT-L-14-336", pretrained=None)
    out.mkdir(parents=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    preprocess_cfg = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}))
    return out


@torch.inference_mode()
def upstream_loop(clip, paths, text_features, batch_size: int = 32) -> list[int]:
    preds = []
    for start in range(0, len(paths), batch_size):
        pixels = torch.stack([clip.preprocess(load_rgb(p)) for p in paths[start : start + batch_size]])
        preds.extend((clip.encode_images(pixels) @ text_features.T).argmax(dim=1).tolist())
    return preds


def main() -> None:
    args = arguments(__doc__, workers=dict(type=int, default=None), batch_size=dict(type=int, default=None))
    folder = work_dir(args)
    full = args.size == "full"
    items = args.items or (8192 if full else 256)
    workers = args.workers if args.workers is not None else (12 if full else 2)
    batch_size = args.batch_size or (512 if full else 64)
    paths = write_jpegs(folder / "jpeg", items)
    clip = ClipModel(clip_dir(folder, args.size), dtype="float16", device=args.device)
    classes = [f"class {i}" for i in range(1000)]
    text_features = clip.encode_texts([f"a photo of a {c}." for c in classes])
    queries = [{"item": i, "row": i, "image": p, "path": p, "label": "x", "choices": None} for i, p in enumerate(paths)]

    table = Table(f"CLIP zero-shot, {items} JPEG images (500x375), decoding included", args, "images/s")
    upstream_loop(clip, paths[:64], text_features)  # warm-up
    reference, seconds_up, memory_up = timed(lambda: upstream_loop(clip, paths, text_features), args.device)
    table.add({"name": "upstream: batch 32, decoding in the loop", "rate": items / seconds_up, "memory": memory_up})
    ours, seconds, memory = timed(
        lambda: run_clip_zero_shot(clip, queries, classes, "a photo of a {label}.", batch_size, "bench",
                                   log=lambda _: None, loader_workers=workers),  # fmt: skip
        args.device,
    )
    same = sum(r["pred"] == classes[k] for r, k in zip(ours, reference))
    table.add({"name": f"ours: batch {batch_size}, {workers} decoding processes", "rate": items / seconds,
               "memory": memory, "notes": f"{same}/{items} predictions identical"})  # fmt: skip


if __name__ == "__main__":
    main()
