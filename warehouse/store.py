"""Writing the warehouse: immutable Parquet part files published by atomic rename.

Layout under the warehouse root:
    results/part-<run_id>-<seq>.parquet   one row per item outcome
    runs/run-<run_id>-<seq>.parquet       run snapshots
    .tmp/                                 files being written; never read; cleaned at start-up

A part is written to .tmp/, flushed and fsynced, then os.replace()d into place, so a reader (or a crash)
never sees half a file: a part either exists whole or not at all.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.parquet import RESULT_SCHEMA, RUN_SCHEMA

RESULTS_DIR = "results"
RUNS_DIR = "runs"
TMP_DIR = ".tmp"


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
        return sorted(self.results_dir.glob("*.parquet")) if self.results_dir.is_dir() else []

    def run_files(self) -> list[Path]:
        return sorted(self.runs_dir.glob("*.parquet")) if self.runs_dir.is_dir() else []

    def write_results(self, rows: list[dict[str, Any]], run_id: str, seq: int) -> Path | None:
        if not rows:
            return None
        table = rows_to_table(rows, RESULT_SCHEMA)
        return publish_table(table, self.results_dir / f"part-{run_id}-{seq:06d}.parquet", self.tmp_dir)

    def write_run(self, snapshot: dict[str, Any]) -> Path:
        table = rows_to_table([snapshot], RUN_SCHEMA)
        name = f"run-{snapshot['run_id']}-{int(snapshot['seq']):06d}.parquet"
        return publish_table(table, self.runs_dir / name, self.tmp_dir)

    def clean_tmp(self) -> int:
        """Remove temp files left by a killed writer. Only call while holding the run lock."""
        removed = 0
        if self.tmp_dir.is_dir():
            for p in self.tmp_dir.iterdir():
                p.unlink(missing_ok=True)
                removed += 1
        return removed
