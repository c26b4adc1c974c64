"""Cost of the image-folder fingerprint every plan computes for a user dataset (docs/protocol.md#images-changed-in-place):
a simulated ImageNet train folder (1,000 class folders of empty files, 1.3 M in all by default) is listed, and the
fingerprint is timed with one thread and with the default eight, plus after one file is changed in place.

    python benchmarks/image_fingerprint.py [--files 1281167] [--folders 1000] [--directory DIR]

The files are empty: the fingerprint reads names, sizes and modification times only, never contents. The page
cache is warm after the folder is made (a cold listing on a network file system is where the threads pay off).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from vlmrepro.io import folder_state


def make_folder(root: Path, n_files: int, n_folders: int) -> None:
    per_folder = -(-n_files // n_folders)
    made = 0
    for f in range(n_folders):
        folder = root / f"n{f:08d}"
        folder.mkdir()
        for i in range(min(per_folder, n_files - made)):
            os.close(os.open(folder / f"n{f:08d}_{i}.JPEG", os.O_CREAT | os.O_WRONLY, 0o644))
        made += per_folder


def timed(root: Path, threads: int) -> tuple[float, str]:
    folder_state.cache_clear()
    start = time.perf_counter()
    state = folder_state(str(root), threads)
    return time.perf_counter() - start, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1_281_167, help="ImageNet-1k train has 1,281,167 images")
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--directory", help="where to make the folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    parent = Path(tempfile.mkdtemp(dir=args.directory))
    try:
        root = parent / "train"
        root.mkdir()
        start = time.perf_counter()
        make_folder(root, args.files, args.folders)
        print(f"made {args.files} files in {args.folders} folders in {time.perf_counter() - start:.0f} s")
        rows = []
        for threads in (1, 8):
            seconds, before = timed(root, threads)
            rows.append((f"{threads} thread(s)", seconds))
        victim = next(next(root.iterdir()).iterdir())
        victim.write_bytes(b"another image")
        seconds, after = timed(root, 8)
        rows.append(("8 threads, one file changed", seconds))
        assert after != before, "a file changed in place must change the fingerprint"
        print(f"\n| fingerprint of {args.files:,} files | seconds | µs per file |\n|---|---|---|")
        for name, seconds in rows:
            print(f"| {name} | {seconds:.2f} | {seconds / args.files * 1e6:.2f} |")
    finally:
        shutil.rmtree(parent)


if __name__ == "__main__":
    main()
