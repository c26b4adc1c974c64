"""Manifests, class lists, image checks and the ImageNet manifest builder (``vlmrepro/datasets.py``). Everything is
built in ``tmp_path``; the whole file runs in a few seconds."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmrepro.datasets import (
    IMAGENET_PREFIX,
    MAX_LISTED,
    ManifestError,
    build_imagenet_manifest,
    check_image,
    disguised_duplicate_classes,
    duplicate_classes,
    load_class_list,
    prepare_split,
    read_manifest,
    resolve_image,
)

CLASSES = ["cat", "dog", "bird"]
PREFIX = "./data/Toy/"


# --- helpers --------------------------------------------------------------------------------------------------


def write_classes(path: Path, classes) -> Path:
    path.write_text(json.dumps(classes), encoding="utf-8")
    return path


def write_manifest(path: Path, rows) -> Path:
    """Rows are dicts (serialised like upstream) or raw strings (written as they are, one line each)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def noisy_image(size=48, seed=0) -> Image.Image:
    """Random pixels, so a JPEG of it has a long entropy-coded scan (truncating it hits image data)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), "RGB")


def save_jpeg(path: Path, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noisy_image(seed=seed).save(path, format="JPEG", quality=90)
    return path


def save_png(path: Path, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noisy_image(seed=seed).save(path, format="PNG")
    return path


def row(image: str, label: str = "cat", split: str = "test", **extra) -> dict:
    return {"image": image, "label": label, "split": split, **extra}


@pytest.fixture
def toy(tmp_path):
    """A small manifest with real JPEG and PNG images under ``root`` (prefix ``./data/Toy/``).

    Line order (0-based): 0 train jpg, 1 test jpg, 2 test png, 3 train png, 4 test jpg, 5 test png.
    """
    root = tmp_path / "Toy"
    files = {
        "train/a.jpg": save_jpeg,
        "test/b.jpg": save_jpeg,
        "test/c.png": save_png,
        "train/d.png": save_png,
        "test/e.jpg": save_jpeg,
        "test/f.png": save_png,
    }
    for i, (rel, save) in enumerate(files.items()):
        save(root / rel, seed=i)
    labels = ["cat", "dog", "bird", "dog", "cat", "dog"]
    rows = [row(PREFIX + rel, label, rel.split("/")[0], extra=i) for i, (rel, label) in enumerate(zip(files, labels))]
    manifest = write_manifest(tmp_path / "toy.jsonl", rows)
    classes = write_classes(tmp_path / "classes.json", CLASSES)
    return {"root": root, "manifest": manifest, "classes": classes, "rows": rows}


def prepare(toy, split="test", **kwargs):
    return prepare_split(toy["manifest"], toy["classes"], split, PREFIX, toy["root"], workers=2, **kwargs)


# --- class lists ----------------------------------------------------------------------------------------------


def test_load_class_list_keeps_order_and_duplicates(tmp_path):
    path = write_classes(tmp_path / "c.json", ["b", "a", "missile", "a"])
    assert load_class_list(path) == ["b", "a", "missile", "a"]
    assert duplicate_classes(["b", "a", "missile", "a"]) == {"a": [1, 3]}
    assert duplicate_classes(CLASSES) == {}


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"cat": 0}', "non-empty JSON array"),
        ('"cat"', "non-empty JSON array"),
        ("[]", "non-empty JSON array"),
        ('["cat", 3]', "entry 1 is 3"),
        ('["cat", null, "dog"]', "entry 1 is None"),
        ('["cat", "dog", "  "]', "entry 2 is '  '"),
        ('["cat", "dog"', "not valid JSON"),
    ],
)
def test_load_class_list_rejects_bad_lists(tmp_path, content, fragment):
    path = tmp_path / "bad_classes.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_class_list(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message


# --- read_manifest --------------------------------------------------------------------------------------------


def test_read_manifest_adds_row_index_in_file_order(tmp_path):
    rows = [row(PREFIX + f"x{i}.jpg", CLASSES[i % 3], ["train", "test"][i % 2], idx=i) for i in range(7)]
    path = write_manifest(tmp_path / "m.jsonl", rows)
    got = read_manifest(path, CLASSES)
    assert [r["row"] for r in got] == list(range(7))
    assert [r["idx"] for r in got] == list(range(7))
    assert [{k: v for k, v in r.items() if k != "row"} for r in got] == rows


def test_read_manifest_unknown_label_names_row_and_label(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", [row("./data/Toy/a.jpg"), row("./data/Toy/b.jpg", "zebra")])
    with pytest.raises(ManifestError) as info:
        read_manifest(path, CLASSES)
    message = str(info.value)
    assert str(path) in message
    assert "row 2" in message
    assert "'zebra'" in message


@pytest.mark.parametrize("field", ["image", "label", "split"])
def test_read_manifest_missing_field_names_row_and_field(tmp_path, field):
    bad = row("./data/Toy/c.jpg")
    del bad[field]
    path = write_manifest(tmp_path / "m.jsonl", [row("./data/Toy/a.jpg"), row("./data/Toy/b.jpg"), bad])
    with pytest.raises(ManifestError) as info:
        read_manifest(path, CLASSES)
    message = str(info.value)
    assert str(path) in message
    assert "row 3" in message
    assert field in message.split("lacks", 1)[1]


def test_read_manifest_missing_fields_are_all_listed(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", [{"image": "./data/Toy/a.jpg"}])
    with pytest.raises(ManifestError, match=r"row 1 lacks field\(s\) label, split"):
        read_manifest(path, CLASSES)


@pytest.mark.parametrize("bad_line", ['{"image": "./data/Toy/a.jpg", "label": "cat",', "not json at all", ""])
def test_read_manifest_invalid_json_names_row(tmp_path, bad_line):
    path = write_manifest(tmp_path / "m.jsonl", [row("./data/Toy/a.jpg"), row("./data/Toy/b.jpg"), bad_line])
    with pytest.raises(ManifestError) as info:
        read_manifest(path, CLASSES)
    message = str(info.value)
    assert str(path) in message
    assert "row 3 is not valid JSON" in message


@pytest.mark.parametrize("bad_line", ['["./data/Toy/a.jpg", "cat", "test"]', '"cat"', "42"])
def test_read_manifest_non_object_line_names_row(tmp_path, bad_line):
    path = write_manifest(tmp_path / "m.jsonl", [bad_line])
    with pytest.raises(ManifestError) as info:
        read_manifest(path, CLASSES)
    assert str(path) in str(info.value)
    assert "row 1 is not a JSON object" in str(info.value)


def test_read_manifest_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        read_manifest(path, CLASSES)
    assert str(path) in str(info.value)
    assert "empty" in str(info.value)


# --- prepare_split: manifest-level errors ---------------------------------------------------------------------


def test_prepare_split_no_rows_of_split(toy):
    with pytest.raises(ManifestError) as info:
        prepare(toy, split="valid")
    assert str(toy["manifest"]) in str(info.value)
    assert "'valid'" in str(info.value)


def test_prepare_split_propagates_manifest_errors(tmp_path, toy):
    write_manifest(toy["manifest"], [*toy["rows"], row(PREFIX + "test/b.jpg", "zebra")])
    with pytest.raises(ManifestError, match=r"row 7 has label 'zebra'"):
        prepare(toy)


def test_prepare_split_propagates_class_list_errors(toy):
    write_classes(toy["classes"], ["cat", 7])
    with pytest.raises(ManifestError) as info:
        prepare(toy)
    assert str(toy["classes"]) in str(info.value)
    assert "entry 1" in str(info.value)


ESCAPES = ["./data/Toy/../images_v2/x.png", "./data/Toy//etc/hostname", "./data/Toy/a/../../x.png"]


@pytest.mark.parametrize("image", ESCAPES)
def test_image_paths_that_leave_the_image_directory_are_refused(tmp_path, image):
    root = tmp_path / "Toy"
    save_png(root / "good.png")
    manifest = write_manifest(tmp_path / "m.jsonl", [row(PREFIX + "good.png"), row(image)])
    with pytest.raises(ManifestError) as info:
        prepare_split(manifest, write_classes(tmp_path / "c.json", CLASSES), "test", PREFIX, root, workers=2)
    message = str(info.value)
    assert str(manifest) in message and "row 2" in message and repr(image) in message and "leaves" in message


def test_a_symlink_inside_the_image_directory_is_followed(tmp_path):
    root, elsewhere = tmp_path / "Toy", tmp_path / "shared-images"
    save_png(elsewhere / "x.png")
    root.mkdir()
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    manifest = write_manifest(tmp_path / "m.jsonl", [row(PREFIX + "linked/x.png")])
    rows, report = prepare_split(manifest, write_classes(tmp_path / "c.json", CLASSES), "test", PREFIX, root, workers=2)
    assert report["n_skipped"] == 0 and rows[0]["path"] == str(root / "linked" / "x.png")


def test_prepare_split_missing_image_root_names_directory(tmp_path, toy):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(ManifestError) as info:
        prepare_split(toy["manifest"], toy["classes"], "test", PREFIX, missing, workers=2)
    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert str(toy["manifest"]) in message


def test_prepare_split_image_root_that_is_a_file(tmp_path, toy):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ManifestError, match="does not exist"):
        prepare_split(toy["manifest"], toy["classes"], "test", PREFIX, not_a_dir, workers=2)


def test_prepare_split_bad_on_bad_image_value(toy):
    with pytest.raises(ValueError, match="on_bad_image"):
        prepare(toy, on_bad_image="ignore")


def test_prepare_split_wrong_prefix_raises(toy):
    rows = list(toy["rows"])
    rows[4] = row("./data/Other/test/e.jpg", "cat", "test")
    write_manifest(toy["manifest"], rows)
    with pytest.raises(ManifestError) as info:
        prepare(toy)
    assert "./data/Other/test/e.jpg" in str(info.value)
    assert repr(PREFIX) in str(info.value)


def test_resolve_image():
    assert resolve_image("./data/Toy/test/b.jpg", PREFIX, "/images") == Path("/images/test/b.jpg")
    with pytest.raises(ManifestError, match="does not start with"):
        resolve_image("data/Toy/test/b.jpg", PREFIX, "/images")


# --- prepare_split: good images --------------------------------------------------------------------------------


def test_prepare_split_keeps_order_adds_row_and_path(toy):
    rows, report = prepare(toy, split="test")
    assert [r["row"] for r in rows] == [1, 2, 4, 5]
    assert [r["extra"] for r in rows] == [1, 2, 4, 5]
    assert [r["label"] for r in rows] == ["dog", "bird", "cat", "dog"]
    for r in rows:
        assert r["path"] == str(toy["root"] / r["image"][len(PREFIX) :])
        assert Path(r["path"]).is_file()
        assert "skip" not in r
        assert r["image"].startswith(PREFIX)  # the manifest path is kept as it was
    assert report["n_rows"] == 4
    assert report["n_skipped"] == 0
    assert report["skipped"] == []
    assert report["split"] == "test"
    assert report["manifest"] == str(toy["manifest"])
    assert report["duplicate_classes"] == {}

    train, report = prepare(toy, split="train")
    assert [r["row"] for r in train] == [0, 3]
    assert report["n_rows"] == 2


def test_prepare_split_reports_duplicate_classes(toy):
    write_classes(toy["classes"], ["cat", "dog", "bird", "dog"])
    _, report = prepare(toy)
    assert report["duplicate_classes"] == {"dog": [1, 3]}


def test_check_image_good_jpeg_and_png(tmp_path):
    assert check_image(save_jpeg(tmp_path / "a.jpg")) is None
    assert check_image(save_png(tmp_path / "a.png")) is None
    assert check_image(tmp_path / "nope.jpg") == "missing"
    assert check_image(tmp_path) == "missing"  # a directory is not an image


# --- prepare_split: bad images ---------------------------------------------------------------------------------


def truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path, n=2048) -> None:
    path.write_bytes(random.Random(1234).randbytes(n))


@pytest.mark.parametrize(
    "damage, reason_prefix",
    [
        (lambda p: p.unlink(), "missing"),
        (truncate_half, "undecodable"),
        (random_bytes, "undecodable"),
    ],
    ids=["missing", "truncated-jpeg", "random-bytes"],
)
def test_check_image_bad(tmp_path, damage, reason_prefix):
    path = save_jpeg(tmp_path / "bad.jpg")
    damage(path)
    assert check_image(path).startswith(reason_prefix)


def damage_toy(toy):
    """Row 1 (test/b.jpg) truncated, row 4 (test/e.jpg) missing, row 5 (test/f.png) random bytes."""
    truncate_half(toy["root"] / "test/b.jpg")
    (toy["root"] / "test/e.jpg").unlink()
    random_bytes(toy["root"] / "test/f.png")


def test_bad_images_error_lists_rows_and_count(toy):
    damage_toy(toy)
    with pytest.raises(ManifestError) as info:
        prepare(toy, on_bad_image="error")
    message = str(info.value)
    assert str(toy["manifest"]) in message
    assert "3 of 4 'test' images" in message
    lines = message.splitlines()
    bad_lines = [line.strip() for line in lines if line.startswith("  row ")]
    # 1-based row numbers, in file order, with path and reason
    assert [line.split(":")[0] for line in bad_lines] == ["row 2", "row 5", "row 6"]
    assert str(toy["root"] / "test/b.jpg") in bad_lines[0] and "undecodable" in bad_lines[0]
    assert str(toy["root"] / "test/e.jpg") in bad_lines[1] and bad_lines[1].endswith("missing")
    assert str(toy["root"] / "test/f.png") in bad_lines[2] and "undecodable" in bad_lines[2]
    assert "c.png" not in message  # the good image is not listed
    assert "on_bad_image: skip" in message


@pytest.mark.parametrize("which", ["test/b.jpg", "test/f.png"])
def test_single_corrupt_image_is_an_error(toy, which):
    (truncate_half if which.endswith(".jpg") else random_bytes)(toy["root"] / which)
    with pytest.raises(ManifestError, match=r"1 of 4 'test' images"):
        prepare(toy)


def test_bad_images_skip_keeps_rows_in_order(toy):
    damage_toy(toy)
    rows, report = prepare(toy, on_bad_image="skip")
    assert [r["row"] for r in rows] == [1, 2, 4, 5]
    skips = {r["row"]: r.get("skip") for r in rows}
    assert skips[2] is None
    assert skips[1].startswith("undecodable")
    assert skips[4] == "missing"
    assert skips[5].startswith("undecodable")
    assert report["n_rows"] == 4
    assert report["n_skipped"] == 3
    assert [s["row"] for s in report["skipped"]] == [1, 4, 5]
    assert [s["image"] for s in report["skipped"]] == [PREFIX + "test/b.jpg", PREFIX + "test/e.jpg", PREFIX + "test/f.png"]
    assert [s["reason"] for s in report["skipped"]] == [skips[1], skips[4], skips[5]]
    json.dumps(report)  # the report is written as JSON


def test_bad_images_error_lists_at_most_max_listed(tmp_path):
    root = tmp_path / "Toy"
    root.mkdir()
    save_png(root / "good.png")
    n_bad = MAX_LISTED + 3
    rows = [row(PREFIX + "good.png")] + [row(PREFIX + f"missing{i}.png") for i in range(n_bad)]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    classes = write_classes(tmp_path / "c.json", CLASSES)
    with pytest.raises(ManifestError) as info:
        prepare_split(manifest, classes, "test", PREFIX, root, workers=2)
    message = str(info.value)
    assert f"{n_bad} of {n_bad + 1} 'test' images" in message
    listed = [line for line in message.splitlines() if line.startswith("  row ")]
    assert len(listed) == MAX_LISTED
    assert listed[0].startswith("  row 2:")
    rows_out, report = prepare_split(manifest, classes, "test", PREFIX, root, on_bad_image="skip", workers=2)
    assert report["n_skipped"] == n_bad
    assert len(rows_out) == n_bad + 1


# --- ImageNet manifest builder ---------------------------------------------------------------------------------

TENCH_TRAIN = [
    "n01440764_10026.JPEG",
    "n01440764_10027.JPEG",
    "n01440764_10029.JPEG",
    "n01440764_10040.JPEG",
    "n01440764_10042.JPEG",
    "n01440764_10043.JPEG",
    "n01440764_10048.JPEG",
    "n01440764_10066.JPEG",
    "n01440764_10074.JPEG",
    "n01440764_1009.JPEG",
]
TENCH_EXTRA = ["n01440764_1010.JPEG", "n01440764_9999.JPEG"]
UPSTREAM_SMALL_SHA256 = "4b0d0aa7871a05bbe6a82a10dc75d72511dba6feee1f98643456f76de90c28e6"


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def fake_imagenet(root: Path, train: dict[str, list[str]], val: dict[str, list[str]] | list[str]) -> Path:
    for wnid, files in train.items():
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        for name in files:
            touch(root / "train" / wnid / name)
    (root / "val").mkdir(parents=True, exist_ok=True)
    if isinstance(val, dict):
        for wnid, files in val.items():
            (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
            for name in files:
                touch(root / "val" / wnid / name)
    else:
        for name in val:
            touch(root / "val" / name)
    return root


@pytest.fixture
def tench_dir(tmp_path):
    # files created in shuffled order: the builder must sort them itself
    files = TENCH_TRAIN + TENCH_EXTRA
    random.Random(0).shuffle(files)
    return fake_imagenet(
        tmp_path / "imagenet", {"n01440764": files}, {"n01440764": ["ILSVRC2012_val_00000293.JPEG"]}
    )


def test_imagenet_manifest_matches_upstream_imagenet_small(tench_dir):
    rows = build_imagenet_manifest(tench_dir, ["tench"])
    text = "".join(json.dumps(r) + "\n" for r in rows[:10])
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == UPSTREAM_SMALL_SHA256
    assert rows[0] == {
        "image": "./data/ImageNet/imagenet/train/n01440764/n01440764_10026.JPEG",
        "label": "tench",
        "label_idx": 0,
        "imagenet_label": "n01440764",
        "idx": 0,
        "split": "train",
    }
    assert list(rows[0]) == ["image", "label", "label_idx", "imagenet_label", "idx", "split"]


def test_imagenet_manifest_val_rows_follow_train_rows(tench_dir):
    rows = build_imagenet_manifest(tench_dir, ["tench"])
    assert len(rows) == 13
    assert [r["idx"] for r in rows] == list(range(13))
    assert [r["split"] for r in rows] == ["train"] * 12 + ["valid"]
    assert [r["image"].rsplit("/", 1)[1] for r in rows[:12]] == TENCH_TRAIN + TENCH_EXTRA
    assert rows[-1] == {
        "image": IMAGENET_PREFIX + "val/n01440764/ILSVRC2012_val_00000293.JPEG",
        "label": "tench",
        "label_idx": 0,
        "imagenet_label": "n01440764",
        "idx": 12,
        "split": "valid",
    }


def test_imagenet_manifest_splits_argument(tench_dir):
    val_only = build_imagenet_manifest(tench_dir, ["tench"], splits=("valid",))
    assert [(r["split"], r["idx"]) for r in val_only] == [("valid", 0)]
    train_only = build_imagenet_manifest(tench_dir, ["tench"], splits=("train",))
    assert len(train_only) == 12 and all(r["split"] == "train" for r in train_only)


def test_imagenet_manifest_label_idx_follows_sorted_wnids(tmp_path):
    root = fake_imagenet(
        tmp_path / "imagenet",
        {"n02000000": ["n02000000_1.JPEG"], "n01000000": ["n01000000_2.JPEG", "n01000000_1.JPEG"]},
        {"n02000000": ["ILSVRC2012_val_00000001.JPEG"], "n01000000": ["ILSVRC2012_val_00000002.JPEG"]},
    )
    (root / "train" / "n01000000" / ".DS_Store").write_bytes(b"")  # hidden files are not images
    rows = build_imagenet_manifest(root, ["first", "second"])
    assert [(r["split"], r["imagenet_label"], r["label"], r["label_idx"]) for r in rows] == [
        ("train", "n01000000", "first", 0),
        ("train", "n01000000", "first", 0),
        ("train", "n02000000", "second", 1),
        ("valid", "n01000000", "first", 0),
        ("valid", "n02000000", "second", 1),
    ]
    assert [r["image"].rsplit("/", 1)[1] for r in rows[:2]] == ["n01000000_1.JPEG", "n01000000_2.JPEG"]
    assert [r["idx"] for r in rows] == list(range(5))


def test_imagenet_manifest_duplicate_class_names(tmp_path):
    """ImageNet lists some names twice: the label comes from the position, not from a name lookup."""
    root = fake_imagenet(
        tmp_path / "imagenet",
        {"n01": ["a.JPEG"], "n02": ["b.JPEG"]},
        {"n01": ["c.JPEG"], "n02": ["d.JPEG"]},
    )
    rows = build_imagenet_manifest(root, ["missile", "missile"])
    assert [r["label_idx"] for r in rows] == [0, 1, 0, 1]
    assert {r["label"] for r in rows} == {"missile"}


def test_imagenet_missing_directory_names_it_and_config_key(tmp_path):
    missing = tmp_path / "no-imagenet"
    with pytest.raises(ManifestError) as info:
        build_imagenet_manifest(missing, ["tench"])
    assert str(missing) in str(info.value)
    assert "datasets.imagenet.images.directory" in str(info.value)


def test_imagenet_missing_split_folder(tmp_path):
    root = tmp_path / "imagenet"
    (root / "train" / "n01440764").mkdir(parents=True)
    touch(root / "train" / "n01440764" / "n01440764_1.JPEG")
    with pytest.raises(ManifestError) as info:
        build_imagenet_manifest(root, ["tench"])
    assert str(root / "val") in str(info.value)


def test_imagenet_class_count_mismatch(tench_dir):
    with pytest.raises(ManifestError) as info:
        build_imagenet_manifest(tench_dir, ["tench", "goldfish"])
    message = str(info.value)
    assert str(tench_dir) in message
    assert "1 WordNet-id folders" in message and "2 names" in message


def test_imagenet_wnids_are_the_union_of_splits(tmp_path):
    # a wnid present only in val still counts: 2 wnids against 1 class name is a mismatch
    root = fake_imagenet(tmp_path / "imagenet", {"n01": ["a.JPEG"]}, {"n01": ["b.JPEG"], "n02": ["c.JPEG"]})
    with pytest.raises(ManifestError, match="found 2 WordNet-id folders but the class list has 1"):
        build_imagenet_manifest(root, ["tench"])


def write_devkit(devkit: Path, synsets: list[tuple[int, str]], ground_truth: list[int]) -> Path:
    from scipy.io import savemat

    data = devkit / "data"
    data.mkdir(parents=True)
    table = np.zeros(len(synsets), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    for i, (ilsvrc_id, wnid) in enumerate(synsets):
        table[i] = (np.array([[ilsvrc_id]], dtype=np.int16), wnid)
    savemat(data / "meta.mat", {"synsets": table})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ground_truth))
    return devkit


def test_imagenet_flat_val_with_devkit(tmp_path):
    # ILSVRC ids are not in WordNet-id order (upstream: id 1 is n02119789), and a non-leaf synset is included
    devkit = write_devkit(
        tmp_path / "ILSVRC2012_devkit_t12",
        [(1, "n02119789"), (2, "n01440764"), (1001, "n00001740")],
        ground_truth=[2, 1, 1, 2, 1],  # images 1..5
    )
    val_files = [f"ILSVRC2012_val_{n:08d}.JPEG" for n in (5, 3, 1, 2, 4)]
    root = fake_imagenet(
        tmp_path / "imagenet",
        {"n01440764": ["n01440764_1.JPEG"], "n02119789": ["n02119789_1.JPEG"]},
        val_files,
    )
    rows = build_imagenet_manifest(root, ["tench", "kit fox"], devkit_dir=devkit)
    val = [r for r in rows if r["split"] == "valid"]
    got = [(r["image"], r["imagenet_label"], r["label"], r["label_idx"]) for r in val]
    assert got == [
        (IMAGENET_PREFIX + "val/ILSVRC2012_val_00000001.JPEG", "n01440764", "tench", 0),
        (IMAGENET_PREFIX + "val/ILSVRC2012_val_00000004.JPEG", "n01440764", "tench", 0),
        (IMAGENET_PREFIX + "val/ILSVRC2012_val_00000002.JPEG", "n02119789", "kit fox", 1),
        (IMAGENET_PREFIX + "val/ILSVRC2012_val_00000003.JPEG", "n02119789", "kit fox", 1),
        (IMAGENET_PREFIX + "val/ILSVRC2012_val_00000005.JPEG", "n02119789", "kit fox", 1),
    ]
    assert [r["idx"] for r in rows] == list(range(7))
    assert [r["split"] for r in rows[:2]] == ["train", "train"]


def test_imagenet_flat_val_image_without_ground_truth(tmp_path):
    devkit = write_devkit(tmp_path / "ILSVRC2012_devkit_t12", [(1, "n01440764"), (2, "n02119789")], [1, 2])
    root = fake_imagenet(
        tmp_path / "imagenet",
        {"n01440764": ["n01440764_1.JPEG"], "n02119789": ["n02119789_1.JPEG"]},
        ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"],  # image 3 has no ground truth
    )
    with pytest.raises(ManifestError, match="ILSVRC2012_val_00000003"):
        build_imagenet_manifest(root, ["tench", "kit fox"], devkit_dir=devkit)


def test_imagenet_flat_val_without_devkit_raises(tmp_path):
    root = fake_imagenet(tmp_path / "imagenet", {"n01440764": ["n01440764_1.JPEG"]}, ["ILSVRC2012_val_00000001.JPEG"])
    with pytest.raises(ManifestError) as info:
        build_imagenet_manifest(root, ["tench"])
    assert str(root / "val") in str(info.value)
    assert "devkit" in str(info.value)


def test_imagenet_flat_val_with_incomplete_devkit_raises(tmp_path):
    devkit = tmp_path / "ILSVRC2012_devkit_t12"
    (devkit / "data").mkdir(parents=True)
    root = fake_imagenet(tmp_path / "imagenet", {"n01440764": ["n01440764_1.JPEG"]}, ["ILSVRC2012_val_00000001.JPEG"])
    with pytest.raises(ManifestError) as info:
        build_imagenet_manifest(root, ["tench"], devkit_dir=devkit)
    assert "meta.mat" in str(info.value)


# --- high-bit-depth and float images are scaled to 8 bits, never clipped -----------------------------------------


def test_16_bit_png_and_float_tiff_load_at_their_intensity(tmp_path):
    from vlmrepro.evaluate import load_rgb

    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 4), 128 * 257, dtype=np.uint16)).save(grey16)  # mid-grey at 16 bits
    grey_float = tmp_path / "grey.tiff"
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), "F").save(grey_float)
    for path in (grey16, grey_float):
        with Image.open(path) as img:
            assert img.mode in ("I;16", "I", "F")  # what PIL's convert("RGB") would clip
        assert check_image(path) is None
        assert np.asarray(load_rgb(path)).tolist() == np.full((4, 4, 3), 128).tolist()


def test_a_float_image_outside_the_unit_range_is_refused_naming_the_file(tmp_path):
    from vlmrepro.evaluate import load_rgb

    path = tmp_path / "hdr.tiff"
    Image.fromarray(np.full((4, 4), 3.0, dtype=np.float32), "F").save(path)
    assert "outside [0, 1]" in check_image(path) and str(path) in check_image(path)
    with pytest.raises(ValueError, match="hdr.tiff"):
        load_rgb(path)


# --- malformed fields and duplicates in disguise -------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("image", 123), ("image", None), ("label", ["cat"]), ("split", 1)])
def test_a_field_of_the_wrong_type_names_file_row_and_field(tmp_path, field, value):
    bad = {**row(PREFIX + "a.png"), field: value}
    manifest = write_manifest(tmp_path / "m.jsonl", [row(PREFIX + "b.png"), bad])
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest, CLASSES)
    message = str(info.value)
    assert str(manifest) in message and "row 2" in message and field in message and "expected a string" in message


def test_class_names_that_differ_only_in_disguise_are_reported(tmp_path, toy):
    names = ["cat", "Cat", "cat ", "ca\u200bt", "caf\u00e9", "cafe\u0301", "dog", "dog", "bird"]
    assert disguised_duplicate_classes(names) == {"cat": [0, 1, 2, 3], "caf\u00e9": [4, 5]}  # "dog" twice is exact
    write_classes(toy["classes"], names)
    _, report = prepare(toy)
    assert report["disguised_duplicate_classes"] == {"cat": [0, 1, 2, 3], "caf\u00e9": [4, 5]}
    assert report["duplicate_classes"] == {"dog": [6, 7]}


def test_a_folders_state_changes_with_any_file_replaced_added_or_removed(tmp_path):
    import os

    from vlmrepro.io import folder_state

    def state():
        folder_state.cache_clear()  # computed once per process and folder when the workflow plans
        return folder_state(str(tmp_path / "images"), 2)

    assert state() == "absent"
    (tmp_path / "images/a").mkdir(parents=True)
    (tmp_path / "images/a/1.jpg").write_bytes(b"one")
    (tmp_path / "images/top.jpg").write_bytes(b"top")
    first = state()
    assert first.startswith("2 files") and state() == first
    (tmp_path / "images/a/1.jpg").write_bytes(b"two")  # same size: the modification time tells
    os.utime(tmp_path / "images/a/1.jpg", ns=(1, 1))
    replaced = state()
    (tmp_path / "images/a/2.jpg").write_bytes(b"new")
    added = state()
    (tmp_path / "images/a/2.jpg").unlink()
    assert len({first, replaced, added}) == 3 and state() == replaced
