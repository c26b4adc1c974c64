"""Dataset manifests: upstream JSON Lines manifests and class lists, the ImageNet manifest builder, image checks,
and the shapes and colours the demo world draws.

A manifest row is ``{"image": "./data/…", "label": <class name>, "split": "train"|"test"|"valid", …}``
(docs/protocol.md#manifests-and-row-order). Row order is significant (it feeds the seeded shuffle), so rows are
never sorted or dropped: an image that is missing or undecodable is either an error or, when the user asks to skip
bad images, a row marked ``skip``.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REQUIRED_FIELDS = ("image", "label", "split")
UPSTREAM_PREFIX = "./data/"
IMAGENET_PREFIX = "./data/ImageNet/imagenet/"
MAX_LISTED = 10  # bad rows named in an error message


class ManifestError(ValueError):
    pass


def load_class_list(path) -> list[str]:
    """A JSON array of class-name strings, in file order (duplicates kept: ImageNet has two)."""
    try:
        with open(path, encoding="utf-8") as handle:
            classes = json.load(handle)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(classes, list) or not classes:
        raise ManifestError(f"{path}: expected a non-empty JSON array of class names")
    for i, name in enumerate(classes):
        if not isinstance(name, str) or not name.strip():
            raise ManifestError(f"{path}: entry {i} is {name!r}, expected a non-empty string")
    return classes


def duplicate_classes(classes: list[str]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(classes):
        seen.setdefault(name, []).append(i)
    return {name: idx for name, idx in seen.items() if len(idx) > 1}


_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))  # soft hyphen, zero-width characters


def disguised_duplicate_classes(classes: list[str]) -> dict[str, list[int]]:
    """Names that differ only in Unicode normalisation form, case, surrounding or repeated spaces or invisible
    characters: different strings to the scorer, one class to a reader. Keyed by the normalised name; exact
    duplicates are :func:`duplicate_classes`' business and are not repeated here."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(classes):
        key = " ".join(unicodedata.normalize("NFKC", name).translate(_INVISIBLE).casefold().split())
        groups.setdefault(key, []).append(i)
    return {key: idx for key, idx in groups.items() if len({classes[i] for i in idx}) > 1}


def first_indices(classes: list[str]) -> dict[str, int]:
    """Name -> index of its first entry: upstream's ``classes.index(name)`` (duplicated names map to the first)."""
    index: dict[str, int] = {}
    for i, name in enumerate(classes):
        index.setdefault(name, i)
    return index


def checked_rows(path, required: tuple[str, ...]):
    """(line number, row) of a JSON Lines file, each row a JSON object with the required fields; errors name the
    file and the row."""
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{path}: row {line_no} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path}: row {line_no} is not a JSON object")
            missing = [f for f in required if f not in row]
            if missing:
                raise ManifestError(f"{path}: row {line_no} lacks field(s) {', '.join(missing)}")
            yield line_no, row


def read_manifest(path, classes: list[str]) -> list[dict]:
    """All rows in file order; each row gets ``row`` (its 0-based line index). Every row is checked."""
    class_set = set(classes)
    rows = []
    for line_no, row in checked_rows(path, REQUIRED_FIELDS):
        for field in REQUIRED_FIELDS:
            if not isinstance(row[field], str):
                raise ManifestError(
                    f"{path}: row {line_no} has {field} {row[field]!r} ({type(row[field]).__name__}), expected a string"
                )
        if row["label"] not in class_set:
            raise ManifestError(f"{path}: row {line_no} has label {row['label']!r}, which is not in the class list")
        row["row"] = line_no - 1
        rows.append(row)
    if not rows:
        raise ManifestError(f"{path}: manifest is empty")
    return rows


def dataset_statistics(rows: list[dict], classes: list[str], eval_split: str) -> dict:
    """Table 7: training and evaluation images and classes of a manifest (every row, split "all")."""
    return {
        "n_train_images": sum(r["split"] == "train" for r in rows),
        "n_validation_images": sum(r["split"] == eval_split for r in rows),
        "n_classes": len(classes),
        "n_unique_class_names": len(set(classes)),
        "n_items": len(rows),
        "n_evaluated": len(rows),
    }


def resolve_image(image: str, prefix: str, image_root) -> Path:
    """The image's path under ``image_root``. A path that leaves the root once normalised ("../", an absolute path
    from a doubled slash) is refused: it would read, and an API model would upload, a file outside the dataset. The
    check is lexical, so a symlink placed inside the root (a common dataset layout) stays allowed."""
    if not isinstance(image, str) or not image.startswith(prefix):
        raise ManifestError(f"image path {image!r} does not start with the configured prefix {prefix!r}")
    root = os.path.normpath(image_root)
    path = os.path.normpath(os.path.join(root, image[len(prefix) :]))
    if os.path.commonpath([root, path]) != root:
        raise ManifestError(f"image path {image!r} leaves the image directory {image_root} (it resolves to {path})")
    return Path(path)


HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img: Image.Image, path) -> Image.Image:
    """8-bit RGB, as every model's processor expects. PIL's ``convert("RGB")`` clips 16-bit values (a 16-bit PNG
    turns nearly white) and float values (a float TIFF turns black), so those are scaled first: 16-bit integers over
    their full range (/257), floats as intensities in [0, 1] (torchvision's convention). Anything else in those
    modes is refused, naming the file."""
    if img.mode not in HIGH_BIT_DEPTH_MODES + ("F",):
        return img.convert("RGB")
    values = np.asarray(img, dtype=np.float64)
    top = 1.0 if img.mode == "F" else 65535.0
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > top:
        raise ValueError(
            f"{path}: {img.mode} image with values in [{values.min():g}, {values.max():g}], outside [0, {top:g}]: "
            "convert it to 8-bit RGB"
        )
    return Image.fromarray(np.round(values * (255.0 / top)).astype(np.uint8), "L").convert("RGB")


IMAGE_ASPECT_RATIOS = ("original", "pad")


def pad_to_square(img: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """The LLaVA code base's ``image_aspect_ratio pad`` (its ``expand2square``): the image pasted centred on a square
    canvas of colour ``fill`` (the image processor's mean, in 0-255), so that the processor's centre crop keeps all
    of it. A square image is returned as it is."""
    width, height = img.size
    if width == height:
        return img
    side = max(width, height)
    canvas = Image.new(img.mode, (side, side), fill)
    canvas.paste(img, ((side - width) // 2, (side - height) // 2))
    return canvas


def processor_mean_colour(image_processor) -> tuple[int, ...]:
    """The image processor's mean as 0-255 integers, as LLaVA's training and model_vqa compute it."""
    return tuple(int(x * 255) for x in image_processor.image_mean)


def check_image(path: Path) -> str | None:
    """None when the image exists, decodes fully and converts to 8-bit RGB, else the reason."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in HIGH_BIT_DEPTH_MODES + ("F",):
                to_rgb(img, path)
    except Exception as err:  # PIL raises many types for corrupt data
        return f"undecodable ({type(err).__name__}: {err})"
    return None


def image_sha256(path: Path) -> str:
    """Content hash of an image file. It is part of every cache key of the items that use the image, so answers
    computed on other images under the same file name are never reused."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _inspect_image(path: Path) -> tuple[str | None, str | None]:
    reason = check_image(path)
    return reason, None if reason else image_sha256(path)


def prepare_split(
    manifest_path,
    classes_path,
    split: str,
    image_prefix: str,
    image_root,
    on_bad_image: str = "error",
    workers: int = 8,
) -> tuple[list[dict], dict]:
    """Rows of one split (file order; split "all" keeps every row) with resolved ``path`` and the image's
    ``sha256``; bad images raise, or are marked ``skip``."""
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    classes = load_class_list(classes_path)
    rows = [r for r in read_manifest(manifest_path, classes) if split in ("all", r["split"])]
    if not rows:
        raise ManifestError(f"{manifest_path}: no rows with split {split!r}")
    if not Path(image_root).is_dir():
        raise ManifestError(
            f"image directory {image_root} does not exist: put the images of {manifest_path} there "
            f"(paths in the manifest start with {image_prefix!r}, which maps to that directory)"
        )
    for row in rows:
        try:
            row["path"] = str(resolve_image(row["image"], image_prefix, image_root))
        except ManifestError as err:
            raise ManifestError(f"{manifest_path}: row {row['row'] + 1}: {err}") from None
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoding and hashing release the GIL
        inspected = list(pool.map(lambda r: _inspect_image(Path(r["path"])), rows))
    for row, (_, digest) in zip(rows, inspected):
        if digest:
            row["sha256"] = digest
    bad = [(row, reason) for row, (reason, _) in zip(rows, inspected) if reason]
    if bad and on_bad_image == "error":
        listed = "\n".join(f"  row {row['row'] + 1}: {row['path']}: {reason}" for row, reason in bad[:MAX_LISTED])
        raise ManifestError(
            f"{manifest_path}: {len(bad)} of {len(rows)} {split!r} images are missing or undecodable; first ones:\n"
            f"{listed}\nFix the images, or set on_bad_image: skip in the config to evaluate without them."
        )
    for row, reason in bad:
        row["skip"] = reason
    report = {
        "manifest": str(manifest_path),
        "split": split,
        "n_rows": len(rows),
        "n_skipped": len(bad),
        "skipped": [{"row": r["row"], "image": r["image"], "reason": why} for r, why in bad],
        "duplicate_classes": duplicate_classes(classes),
        "disguised_duplicate_classes": disguised_duplicate_classes(classes),
    }
    return rows, report


# --- ImageNet -------------------------------------------------------------------------------------------------


def _list_images(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))


def _imagenet_val_ground_truth(devkit: Path) -> list[str]:
    """WordNet id of each validation image (1-based file numbering) from the ILSVRC2012 devkit."""
    from scipy.io import loadmat

    meta, truth = devkit / "data" / "meta.mat", devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    for needed in (meta, truth):
        if not needed.is_file():
            raise ManifestError(f"ImageNet devkit file {needed} is missing (expected the ILSVRC2012_devkit_t12 layout)")
    synsets = loadmat(meta, squeeze_me=True)["synsets"]
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    wnids = []
    for line_no, value in enumerate(truth.read_text().split(), start=1):
        if int(value) not in id_to_wnid:
            raise ManifestError(f"{truth}: line {line_no} names ILSVRC2012 id {value}, which {meta} does not define")
        wnids.append(id_to_wnid[int(value)])
    return wnids


def build_imagenet_manifest(imagenet_dir, classes: list[str], splits=("train", "valid"), devkit_dir=None) -> list[dict]:
    """Rows in the upstream ``imagenet.jsonl`` schema (docs/protocol.md#imagenet-manifest).

    Layout: ``<dir>/train/<wnid>/*.JPEG`` and ``<dir>/val/<wnid>/*.JPEG``; a flat ``<dir>/val/*.JPEG`` is accepted
    with ``devkit_dir`` (ILSVRC2012_devkit_t12) for the labels. ``label_idx`` is the WordNet id's position in the
    sorted list of ids; rows go train first, then validation, each by WordNet id and then file name; ``idx``
    counts from 0 across both.
    """
    root = Path(imagenet_dir)
    if not root.is_dir():
        raise ManifestError(
            f"ImageNet directory {root} does not exist: set datasets.imagenet.images.directory in the config to a "
            "folder holding train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (or a flat val/ plus the devkit)"
        )
    # split -> (folder name, {wnid: sorted file names}, whether files sit in wnid sub-folders)
    per_split: dict[str, tuple[str, dict[str, list[str]], bool]] = {}
    for split in splits:
        folder_name = "val" if split == "valid" else split
        folder = root / folder_name
        if not folder.is_dir():
            raise ManifestError(f"ImageNet split folder {folder} is missing")
        subdirs = sorted(e.name for e in os.scandir(folder) if e.is_dir())
        if subdirs:
            per_split[split] = (folder_name, {wnid: _list_images(folder / wnid) for wnid in subdirs}, True)
        elif split == "valid" and devkit_dir:
            truth = _imagenet_val_ground_truth(Path(devkit_dir))
            flat: dict[str, list[str]] = {}
            for name in _list_images(folder):
                number = int(name.rsplit("_", 1)[-1].split(".")[0])  # ILSVRC2012_val_00000001.JPEG -> 1
                if not 1 <= number <= len(truth):
                    raise ManifestError(f"{folder / name}: no label in the devkit ground truth ({len(truth)} lines)")
                flat.setdefault(truth[number - 1], []).append(name)
            per_split[split] = (folder_name, {wnid: sorted(flat[wnid]) for wnid in sorted(flat)}, False)
        else:
            raise ManifestError(f"{folder} has no WordNet-id folders (a flat val/ needs imagenet devkit_dir in config)")
    wnids = sorted(set().union(*(files.keys() for _, files, _ in per_split.values())))
    if len(wnids) != len(classes):
        raise ManifestError(
            f"{root}: found {len(wnids)} WordNet-id folders but the class list has {len(classes)} names"
        )
    wnid_index = {wnid: i for i, wnid in enumerate(wnids)}
    rows = []
    for split in splits:
        folder_name, files_by_wnid, nested = per_split[split]
        for wnid, files in files_by_wnid.items():
            for name in files:
                rel = f"{folder_name}/{wnid}/{name}" if nested else f"{folder_name}/{name}"
                rows.append(
                    {
                        "image": IMAGENET_PREFIX + rel,
                        "label": classes[wnid_index[wnid]],
                        "label_idx": wnid_index[wnid],
                        "imagenet_label": wnid,
                        "idx": len(rows),
                        "split": split,
                    }
                )
    return rows


# --- shapes and colours of the demo world (vlmrepro.demo.world) -----------------------------------------------

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
    "orange": (245, 130, 20),
}


# other names of the shapes (the demo's stand-in for the ImageNet synonym list of Table 8)
SYNTHETIC_SYNONYMS = {
    "circle": ["disc", "round"],
    "square": ["box", "block"],
    "triangle": ["wedge"],
    "diamond": ["rhombus", "lozenge"],
    "cross": ["plus"],
    "ring": ["hoop", "loop"],
}


def paint_shape(draw, shape: str, cx: float, cy: float, radius: float, fill, ring_width: int, square_scale: float = 1.0,
                bar_divisor: float = 3) -> None:  # fmt: skip
    """One of SHAPES centred at (cx, cy) on a PIL ``ImageDraw``: the demo world's drawing."""
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=fill, width=ring_width)
    elif shape == "square":
        r = radius * square_scale
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)], fill=fill)
    elif shape == "cross":
        w = radius / bar_divisor
        draw.rectangle((cx - w, cy - radius, cx + w, cy + radius), fill=fill)
        draw.rectangle((cx - radius, cy - w, cx + radius, cy + w), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
