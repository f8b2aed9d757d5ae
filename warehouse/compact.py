"""Merge small part files into larger ones without changing what any query returns.

Protocol (the caller holds the warehouse lock, so no run writes meanwhile):
1. stream the rows of a group of small parts into one temp file in .tmp/, whose footer lists the parts it
   replaces (`enrich.replaces`), fsync;
2. publish it as `compact-<id>.parquet` by atomic rename (+ directory fsync): from now on `live_parts()`
   skips the replaced parts, so readers see each row exactly once;
3. delete the replaced parts.
A crash before 2 leaves a temp file (cleaned by the next writer); a crash between 2 and 3 leaves replaced
parts that nobody reads, removed by `remove_replaced()` at the next run or compaction. A reader holding an
older file list may find a replaced part gone: `views.read_snapshot` takes a new snapshot and retries.
Rows are copied as they are: same values, every column kept (older parts get nulls for newer columns,
exactly as the views' union by name shows them).
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from enrich.private_fs import open_private, own_state_dir
from enrich.schemas.parquet import RESULT_SCHEMA, RUN_SCHEMA
from enrich.warehouse.store import COMPACT_PREFIX, REPLACES_KEY, Warehouse, _fsync_dir, live_parts, replaced_by

DEFAULT_TARGET_ROWS = 250_000
ROW_GROUP_ROWS = 64_000


@dataclass
class CompactReport:
    merged: dict[str, int] = field(default_factory=dict)  # folder -> parts merged away
    written: dict[str, int] = field(default_factory=dict)  # folder -> merged parts written
    removed_leftovers: int = 0


def remove_replaced(warehouse: Warehouse) -> int:
    """Delete parts that a published compacted part replaces (left by a compaction that was killed)."""
    removed = 0
    for directory in (warehouse.results_dir, warehouse.runs_dir):
        if not directory.is_dir():
            continue
        present = {f.name for f in directory.glob("*.parquet")}
        for f in sorted(directory.glob(f"{COMPACT_PREFIX}*.parquet")):
            for name in replaced_by(f):
                if name in present:
                    (directory / name).unlink(missing_ok=True)
                    present.discard(name)
                    removed += 1
        if removed:
            _fsync_dir(directory)
    return removed


def _groups(parts: list[Path], target_rows: int) -> list[list[tuple[Path, int]]]:
    """Consecutive runs of small parts, each up to target_rows rows; only groups worth merging (2+)."""
    groups: list[list[tuple[Path, int]]] = []
    current: list[tuple[Path, int]] = []
    rows_in_current = 0
    for part in parts:
        n = pq.read_metadata(part).num_rows
        if n >= target_rows:
            continue
        if current and rows_in_current + n > target_rows:
            groups.append(current)
            current, rows_in_current = [], 0
        current.append((part, n))
        rows_in_current += n
    if current:
        groups.append(current)
    return [g for g in groups if len(g) > 1]


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            columns.append(col if col.type == f.type else col.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _merge(group: list[tuple[Path, int]], canonical: pa.Schema, warehouse: Warehouse) -> Path:
    parts = [p for p, _ in group]
    schemas = [pq.read_schema(p).remove_metadata() for p in parts]
    unified = pa.unify_schemas([canonical, *schemas], promote_options="permissive")
    # nullable everywhere: a column missing from an old part becomes nulls
    unified = pa.schema([f.with_nullable(True) for f in unified])
    replaces = sorted({p.name for p in parts} | {name for p in parts for name in replaced_by(p)})
    unified = unified.with_metadata({REPLACES_KEY: json.dumps(replaces).encode()})
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    dest = parts[0].parent / f"{COMPACT_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    own_state_dir(warehouse.tmp_dir)
    tmp = warehouse.tmp_dir / f"{dest.name}.{uuid.uuid4().hex}.tmp"
    try:
        with os.fdopen(open_private(tmp), "wb") as fh:
            with pq.ParquetWriter(fh, unified, compression="zstd") as writer:
                buffer: list[pa.Table] = []
                buffered = 0
                for part in parts:
                    table = _conform(pq.read_table(part), unified)
                    buffer.append(table)
                    buffered += table.num_rows
                    if buffered >= ROW_GROUP_ROWS:
                        writer.write_table(pa.concat_tables(buffer), row_group_size=ROW_GROUP_ROWS)
                        buffer, buffered = [], 0
                if buffer:
                    writer.write_table(pa.concat_tables(buffer), row_group_size=ROW_GROUP_ROWS)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)  # the commit: from here on the replaced parts are not read
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    for part in parts:
        part.unlink(missing_ok=True)
    _fsync_dir(dest.parent)
    return dest


def compact(warehouse: Warehouse, target_rows: int = DEFAULT_TARGET_ROWS) -> CompactReport:
    """Merge small parts of results/ and runs/. Call only while holding the warehouse lock."""
    report = CompactReport(removed_leftovers=remove_replaced(warehouse))
    warehouse.clean_tmp()
    for directory, canonical in ((warehouse.results_dir, RESULT_SCHEMA), (warehouse.runs_dir, RUN_SCHEMA)):
        merged = written = 0
        for group in _groups(live_parts(directory), target_rows):
            _merge(group, canonical, warehouse)
            merged += len(group)
            written += 1
        report.merged[directory.name] = merged
        report.written[directory.name] = written
    return report
