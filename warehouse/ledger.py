"""The spend ledger: every billed request, recorded the moment its answer arrives, outside the chunk commit.

A chunk's rows are committed together (one Parquet part), so a run killed mid-chunk (kill -9, the OOM
killer, a third Ctrl-C) or a chunk whose part could not be written would otherwise take the cost of the
requests it already paid for with it: the daily cap would start from $0 and pay again. So each run appends
one JSON line per billed request to `ledger/run-<run_id>.jsonl`:

    {"run_id": ..., "at": "2026-12-01T10:00:00.123456+00:00", "cost_usd": "0.000123", "content_hash": ...}

Each line goes to the kernel with one `write()` on an O_APPEND descriptor as soon as the answer is priced,
so it survives the death of the process at any moment; the file is fsynced before every chunk commit and at
the end of the run, so a power loss can only lose what was billed since the last commit.

Reconciliation (per run, never across runs): a run's spend is the larger of its committed rows' cost and
its ledger total. Every committed billed row has its ledger line, so for a finished run they agree; for a
run that died or lost a part the ledger is the larger and is what counts. Nothing is counted twice. A run
that closes with every billed request committed deletes its ledger (its rows say it all), so the folder only
holds the runs whose spend the rows do not show.
"""
from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from enrich.schemas.parquet import COST_TYPE, TS

LEDGER_DIR = "ledger"
COST_SCALE = Decimal("1e-12")
LEDGER_SCHEMA = pa.schema([pa.field("run_id", pa.string()), pa.field("billed_at", TS), pa.field("cost_usd", COST_TYPE)])


def ledger_dir(root: str | Path) -> Path:
    return Path(root) / LEDGER_DIR


def ledger_path(root: str | Path, run_id: str) -> Path:
    return ledger_dir(root) / f"run-{run_id}.jsonl"


class SpendLedger:
    """The append-only spend record of one run. Thread-safe; `record` never raises (a run whose ledger cannot
    be written still has its rows, and says so once in the log)."""

    def __init__(self, root: str | Path, run_id: str) -> None:
        self.path = ledger_path(root, run_id)
        self.run_id = run_id
        self.total = Decimal(0)
        self.lines = 0
        self.error: OSError | None = None
        self._lock = threading.Lock()
        self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0),
                                       0o600)

    def record(self, cost: Decimal, content_hash: str | None = None) -> None:
        if not cost:
            return
        line = json.dumps({"run_id": self.run_id, "at": datetime.now(timezone.utc).isoformat(),
                           "cost_usd": str(cost), "content_hash": content_hash}) + "\n"
        with self._lock:
            self.total += cost
            self.lines += 1
            if self._fd is None:
                return
            try:
                os.write(self._fd, line.encode())  # one write: the kernel has it even if we die next
                self._dirty = True
            except OSError as exc:
                self.error = self.error or exc

    def sync(self) -> None:
        """fsync what was recorded (before a chunk commits, and at the end)."""
        with self._lock:
            if self._fd is None or not self._dirty:
                return
            try:
                os.fsync(self._fd)
                self._dirty = False
            except OSError as exc:
                self.error = self.error or exc

    def close(self, *, discard: bool = False) -> None:
        """Close it; with discard=True (every billed request's row is committed) the file is removed."""
        self.sync()
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        if discard:
            self.path.unlink(missing_ok=True)


def _lines(path: Path) -> Iterable[dict]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            yield {"run_id": str(entry["run_id"]), "billed_at": datetime.fromisoformat(entry["at"]),
                   "cost_usd": Decimal(entry["cost_usd"]).quantize(COST_SCALE)}
        except (ValueError, KeyError, TypeError, ArithmeticError):
            continue  # a line torn by a power loss: its request is simply not known


def read_ledgers(root: str | Path) -> pa.Table:
    """Every ledger line of the warehouse as a table (run_id, billed_at, cost_usd)."""
    folder = ledger_dir(root)
    rows: list[dict] = []
    if folder.is_dir():
        for path in sorted(folder.glob("run-*.jsonl")):
            rows.extend(_lines(path))
    return pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)
