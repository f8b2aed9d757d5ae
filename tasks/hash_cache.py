"""(path, size, mtime_ns) -> sha256, so an unchanged file is not read again on the next scan.

SQLite in WAL mode under `$ENRICH_HOME/cache/hashes.sqlite`: every write is a transaction, so a kill at any
moment leaves the cache as it was before the last unfinished batch (entries not yet flushed are simply
hashed again next time). One connection shared by the discovery threads behind a lock: a lookup costs
microseconds next to the file I/O it saves. An entry is trusted only while the path, the size and the
mtime (nanoseconds) all match; a tool that rewrites bytes and restores both would fool it, as it fools
make and rsync.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from enrich.private_fs import create_private_file, own_state_dir, private_dirs

FLUSH_EVERY = 500


class HashCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dirs(self.path.parent.parent)
        own_state_dir(self.path.parent)
        create_private_file(self.path)  # SQLite gives its -wal and -shm files the database file's mode
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)")
        self._pending: dict[str, tuple[str, int, int, str]] = {}  # written at the next flush
        self.hits = 0
        self.misses = 0

    def get(self, path: str, size: int, mtime_ns: int) -> str | None:
        with self._lock:
            pending = self._pending.get(path)
            row = pending[1:] if pending is not None else self._db.execute(
                "SELECT size, mtime_ns, sha256 FROM hashes WHERE path = ?", (path,)).fetchone()
            if row is not None and row[0] == size and row[1] == mtime_ns:
                self.hits += 1
                return row[2]
            self.misses += 1
            return None

    def put(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        with self._lock:
            self._pending[path] = (path, size, mtime_ns, sha256)
            if len(self._pending) >= FLUSH_EVERY:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        with self._db:  # one transaction per batch
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", list(self._pending.values()))
        self._pending.clear()

    def close(self) -> None:
        with self._lock:
            try:
                self._flush_locked()
            finally:
                self._db.close()

    def __enter__(self) -> "HashCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_cache_path(home: str | Path) -> Path:
    return Path(home) / "cache" / "hashes.sqlite"
