"""Write-ahead caches of finished items, so that a killed job's rerun recomputes only what was in flight.

A cache is an append-only JSON Lines file of ``{"key": …, "value": …}``. Keys hash everything that determines an
item's answer (model and revision, protocol version, the rendered prompt, the item, generation settings), so an
entry can only be reused by a job that would compute exactly the same thing; entries of other settings are never
reused. Each finished batch is appended and fsynced before the next one starts. A line cut short by a kill is
ignored. Caches live outside the declared outputs, so Snakemake does not delete them when a job fails; the
declared outputs are still written atomically at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from .io import naming_full_disk


def cache_key(*parts) -> str:
    """sha256 of the canonical JSON of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class WriteAheadCache:
    """``path``: the file this job appends to. ``also_read``: other cache files whose entries may be reused (the
    other shards of the same output, under another shard count)."""

    def __init__(self, path, also_read=()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, object] = {}
        self._lock = threading.Lock()
        for other in [*also_read, self.path]:
            self._load(Path(other))

    def _load(self, path: Path) -> None:
        data = path.read_bytes() if path.is_file() else b""
        for line in data.split(b"\n"):
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut short by a killed run
                continue
            if isinstance(entry, dict) and isinstance(entry.get("key"), str) and "value" in entry:
                self.entries[entry["key"]] = entry["value"]
        if path == self.path and data and not data.endswith(b"\n"):
            with open(path, "ab") as handle:  # end the cut line so the next entry starts on its own
                handle.write(b"\n")

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str):
        return self.entries.get(key)

    def put_many(self, items: dict[str, object]) -> None:
        """Append entries and make them durable (fsync) before returning."""
        if not items:
            return
        text = "".join(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n" for k, v in items.items())
        with self._lock, naming_full_disk(self.path):
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            self.entries.update(items)

    def put(self, key: str, value) -> None:
        self.put_many({key: value})


class ArrayLog:
    """Write-ahead log of batches of arrays too large for JSON (hidden-state features): each batch is appended as
    consecutive ``np.save`` records and fsynced. ``read`` returns the complete batches; a batch cut short by a kill
    is dropped and cut off the file, so the next append starts clean."""

    def __init__(self, path, fields: tuple[str, ...]):
        self.path, self.fields = Path(path), fields
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> list[dict]:
        import numpy as np

        batches, good = [], 0
        if not self.path.is_file():
            return batches
        with open(self.path, "rb") as handle:
            while True:
                try:
                    batch = {f: np.load(handle, allow_pickle=False) for f in self.fields}
                except (ValueError, EOFError, OSError):  # end of file, or a record cut short
                    break
                batches.append(batch)
                good = handle.tell()
        if good != self.path.stat().st_size:
            with open(self.path, "r+b") as handle:
                handle.truncate(good)
        return batches

    def append(self, batch: dict) -> None:
        import numpy as np

        with naming_full_disk(self.path), open(self.path, "ab") as handle:
            for field in self.fields:
                np.save(handle, batch[field], allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())


def shard_cache(path) -> "WriteAheadCache":
    """The write-ahead cache of one shard job, reading its siblings' too: entries written under another shard count
    are reused, because keys name items, not shards."""
    path = Path(path)
    return WriteAheadCache(path, also_read=sorted(path.parent.glob("*.jsonl")))
