"""Writing the warehouse: immutable Parquet part files published by atomic rename.

Layout under the warehouse root:
    results/part-<run_id>-<seq>.parquet   one row per item outcome
    runs/run-<run_id>-<seq>.parquet       run snapshots
    profiles/<name>.json                  the fields of each profile a run asked (for the profile_<name> views)
    .tmp/                                 files being written; never read; cleaned at start-up

A part is written to .tmp/, flushed and fsynced, then os.replace()d into place, so a reader (or a crash)
never sees half a file: a part either exists whole or not at all. That rename is the commit: a chunk's
rows are committed together or not at all, and nothing else needs to be written for them to count.

`enrich compact` (warehouse/compact.py) merges parts into `compact-*.parquet` files whose footer lists the
parts they replace (key `enrich.replaces`). The merged part is published first and the replaced ones are
deleted after, so between the two (or after a crash there) both exist: `live_parts()` drops the replaced
ones, and readers never count a row twice.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from enrich.schemas.parquet import RESULT_SCHEMA, RUN_SCHEMA

RESULTS_DIR = "results"
RUNS_DIR = "runs"
PROFILES_DIR = "profiles"
TMP_DIR = ".tmp"
COMPACT_PREFIX = "compact-"
REPLACES_KEY = b"enrich.replaces"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_table(table: pa.Table, dest: Path, tmp_dir: Path) -> Path:
    """Write `table` to `dest` atomically: temp file in tmp_dir (same filesystem), fsync, rename."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{dest.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return dest


def replaced_by(part: Path) -> list[str]:
    """Names of the parts a compacted part replaces (from its footer); [] for an ordinary part."""
    if not part.name.startswith(COMPACT_PREFIX):
        return []
    meta = pq.read_schema(part).metadata or {}
    return json.loads(meta.get(REPLACES_KEY, b"[]"))


def live_parts(directory: Path, attempts: int = 5) -> list[Path]:
    """The committed parts of a folder, sorted, minus parts a compacted part has replaced."""
    for _ in range(attempts):
        if not directory.is_dir():
            return []
        files = sorted(directory.glob("*.parquet"))
        try:
            replaced = {name for f in files for name in replaced_by(f)}
        except FileNotFoundError:
            continue  # a compaction replaced a compacted part while we listed: list again
        return [f for f in files if f.name not in replaced]
    raise RuntimeError(f"{directory}: parts keep changing while being listed")


def rows_to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    rows = list(rows)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


class Warehouse:
    """A folder of Parquet parts. Cheap to construct; creates folders lazily on first write."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def results_dir(self) -> Path:
        return self.root / RESULTS_DIR

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    @property
    def tmp_dir(self) -> Path:
        return self.root / TMP_DIR

    def result_files(self) -> list[Path]:
        return live_parts(self.results_dir)

    def run_files(self) -> list[Path]:
        return live_parts(self.runs_dir)

    def write_results(self, rows: list[dict[str, Any]], run_id: str, seq: int) -> Path | None:
        if not rows:
            return None
        table = rows_to_table(rows, RESULT_SCHEMA)
        return publish_table(table, self.results_dir / f"part-{run_id}-{seq:06d}.parquet", self.tmp_dir)

    def write_run(self, snapshot: dict[str, Any]) -> Path:
        table = rows_to_table([snapshot], RUN_SCHEMA)
        name = f"run-{snapshot['run_id']}-{int(snapshot['seq']):06d}.parquet"
        return publish_table(table, self.runs_dir / name, self.tmp_dir)

    def write_profile(self, doc: dict[str, Any]) -> Path:
        """Record a profile's fields (schemas/profiles.py Profile.describe), atomically, replacing an older
        record of the same name: the profile_<name> view types its columns from the latest one."""
        dest = self.root / PROFILES_DIR / f"{doc['name']}.json"
        if dest.is_file():
            try:
                if json.loads(dest.read_text()) == doc:
                    return dest
            except (OSError, ValueError):
                pass
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"{dest.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(doc, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def profile_docs(self) -> dict[str, dict[str, Any]]:
        """The recorded profiles, by name (unreadable records are skipped: the view is then not made)."""
        out = {}
        folder = self.root / PROFILES_DIR
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                try:
                    doc = json.loads(path.read_text())
                    out[str(doc["name"])] = doc
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return out

    def clean_tmp(self) -> int:
        """Remove temp files left by a killed writer. Only call while holding the run lock."""
        removed = 0
        if self.tmp_dir.is_dir():
            for p in self.tmp_dir.iterdir():
                p.unlink(missing_ok=True)
                removed += 1
        return removed
