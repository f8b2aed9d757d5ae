"""Writing the warehouse: immutable Parquet part files published by atomic rename.

Layout under the warehouse root:
    results/part-<run_id>-<seq>.parquet   one row per item outcome
    runs/run-<run_id>-<seq>.parquet       run snapshots
    profiles/<name>.json                  the fields of each profile a run asked (for the profile_<name> views)
    .tmp/                                 files being written; never read; cleaned at start-up
    ledger/run-<run_id>.jsonl             billed requests not yet (or never) committed (warehouse/ledger.py)
    quarantine/                           parts found unreadable, moved aside with a warning (never read)

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
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from enrich.errors import ConfigError
from enrich.schemas.parquet import RESULT_SCHEMA, RUN_SCHEMA

from enrich.private_fs import open_private, own_state_dir, private_dirs

QUARANTINE_DIR = "quarantine"
RESULTS_DIR = "results"
RUNS_DIR = "runs"
PROFILES_DIR = "profiles"
TMP_DIR = ".tmp"
COMPACT_PREFIX = "compact-"
REPLACES_KEY = b"enrich.replaces"


class WarehouseUnusable(ConfigError):
    """The warehouse path cannot be used: missing (for a reader), not a folder, unreadable or read-only."""

    kind = "warehouse_unusable"


def _not_a_folder(root: Path) -> str | None:
    for p in (root, *root.parents):
        if p.exists():
            if not p.is_dir():
                return (f"the warehouse path {root} is a file, not a folder" if p == root
                        else f"the warehouse path {root} is under {p}, which is a file")
            return None
    return None


def check_readable(root: str | Path) -> None:
    """For readers (`query`, `runs`): the warehouse must exist and be a readable folder."""
    root = Path(root)
    problem = _not_a_folder(root)
    if problem:
        raise WarehouseUnusable(problem)
    if not root.exists():
        raise WarehouseUnusable(f"there is no warehouse at {root} (nothing has been run into it; "
                                "see --warehouse, ENRICH_WAREHOUSE and ENRICH_HOME)")
    if not os.access(root, os.R_OK | os.X_OK):
        raise WarehouseUnusable(f"cannot read the warehouse {root}: permission denied")


def check_writable(root: str | Path) -> None:
    """For writers (`run`, `compact`, `serve`), before anything starts: the warehouse folder exists or can be
    created, and a file can be created in it."""
    root = Path(root)
    problem = _not_a_folder(root)
    if problem:
        raise WarehouseUnusable(problem)
    try:
        private_dirs(root)
        probe = root / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise WarehouseUnusable(f"cannot write to the warehouse {root}: {exc.strerror or exc}") from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(table: pa.Table, dest: Path, tmp_dir: Path) -> Path:
    """`table` as a private temp file in tmp_dir (same filesystem as `dest`), written and fsynced."""
    private_dirs(tmp_dir.parent)
    own_state_dir(tmp_dir)
    own_state_dir(dest.parent)
    tmp = tmp_dir / f"{dest.name}.{uuid.uuid4().hex}.tmp"
    try:
        with os.fdopen(open_private(tmp), "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish_table(table: pa.Table, dest: Path, tmp_dir: Path) -> Path:
    """Write `table` to `dest` atomically: temp file in tmp_dir (same filesystem), fsync, rename."""
    tmp = _write_temp(table, dest, tmp_dir)
    try:
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return dest


def publish_table_once(table: pa.Table, dest: Path, tmp_dir: Path) -> bool:
    """Like publish_table, but never replaces an existing `dest` (link() instead of rename()): False when one
    was already there (another attempt of the same chunk published it first)."""
    tmp = _write_temp(table, dest, tmp_dir)
    try:
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(dest.parent)
    return True


def clear_tmp(tmp_dir: Path) -> int:
    """Remove the temp files a killed writer left in `tmp_dir` (only while holding the run lock); how many."""
    removed = 0
    if tmp_dir.is_dir():
        for p in tmp_dir.iterdir():
            p.unlink(missing_ok=True)
            removed += 1
    return removed


MAGIC = b"PAR1"


def part_problem(part: Path) -> str | None:
    """Why `part` is not a readable Parquet file (cheap: magic bytes and footer length), or None. A part is
    published whole by rename, so one that fails this was damaged afterwards (a disk error, a truncating copy,
    a hand edit) and will never become readable."""
    try:
        with open(part, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 12:
                return f"{size} bytes, too short for Parquet"
            head = fh.read(4)
            fh.seek(size - 8)
            tail = fh.read(8)
    except FileNotFoundError:
        return None  # deleted meanwhile (a compaction): not our business
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if head != MAGIC or tail[4:] != MAGIC:
        return "not a complete Parquet file (no magic bytes: truncated or overwritten)"
    footer = int.from_bytes(tail[:4], "little")
    if footer > size - 12:
        return "its footer is damaged"
    return None


_reported: set[str] = set()


def quarantine(part: Path, problem: str) -> None:
    """Move an unreadable part out of the way (`<warehouse>/quarantine/`) so every command keeps working,
    and say so on stderr, naming it. Its rows are lost to the views (a later run describes those files again);
    the file is kept for inspection. A read-only warehouse leaves it in place: it is skipped, with the warning."""
    import sys

    root = part.parent.parent
    dest_dir = root / QUARANTINE_DIR
    dest = dest_dir / f"{part.parent.name}-{part.name}"
    where = ""
    try:
        own_state_dir(dest_dir)
        n = 1
        while dest.exists():
            n += 1
            dest = dest_dir / f"{part.parent.name}-{part.name}.{n}"
        os.replace(part, dest)
        where = f"; moved to {dest}"
    except FileNotFoundError:
        return
    except OSError as exc:
        where = f"; skipped (could not move it to {dest_dir}: {exc.strerror or exc})"
    if str(part) not in _reported:
        _reported.add(str(part))
        print(f"enrich: warning: the warehouse part {part} is unreadable ({problem}){where}; its rows are left out",
              file=sys.stderr, flush=True)


def readable_parts(files: Iterable[Path]) -> list[Path]:
    """`files` less the unreadable ones, which are quarantined."""
    good = []
    for f in files:
        problem = None if f.name.startswith(COMPACT_PREFIX) else part_problem(f)  # compacted: checked already
        if problem is None:
            good.append(f)
        else:
            quarantine(f, problem)
    return good


def quarantine_unreadable(files: Iterable[Path]) -> int:
    """Deep check, after a reader failed: open each part's footer with pyarrow; quarantine those that fail.
    Returns how many were quarantined."""
    moved = 0
    for f in files:
        try:
            pq.read_metadata(f)
        except FileNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001 - any failure to read the footer makes the part unusable
            quarantine(f, f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            moved += 1
    return moved


def replaced_by(part: Path) -> list[str]:
    """Names of the parts a compacted part replaces (from its footer); [] for an ordinary part."""
    if not part.name.startswith(COMPACT_PREFIX):
        return []
    meta = pq.read_schema(part).metadata or {}
    return json.loads(meta.get(REPLACES_KEY, b"[]"))


def live_parts(directory: Path, attempts: int = 5) -> list[Path]:
    """The committed parts of a folder, sorted, minus parts a compacted part has replaced. Unreadable parts
    are quarantined (see `quarantine`), so one damaged file never breaks a command."""
    for _ in range(attempts):
        if not directory.is_dir():
            return []
        files = sorted(directory.glob("*.parquet"))
        bad: set[Path] = set()
        replaced: set[str] = set()
        try:
            for f in files:
                if not f.name.startswith(COMPACT_PREFIX):
                    continue
                problem = part_problem(f)
                if problem is None:
                    try:
                        replaced.update(replaced_by(f))
                        continue
                    except FileNotFoundError:
                        raise
                    except (OSError, ValueError) as exc:
                        problem = f"its footer cannot be read: {exc}"
                quarantine(f, problem)
                bad.add(f)
        except FileNotFoundError:
            continue  # a compaction replaced a compacted part while we listed: list again
        # only the parts that will be read are checked (a compaction may be deleting the replaced ones)
        return readable_parts(f for f in files if f.name not in replaced and f not in bad)
    raise RuntimeError(f"{directory}: parts keep changing while being listed")


def rows_to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    rows = list(rows)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


class Warehouse:
    """A folder of Parquet parts. Cheap to construct; creates folders lazily on first write."""

    remote = False  # warehouse/object_store.py ObjectWarehouse is the other implementation

    def __init__(self, root: str | Path, guard: Callable[[], None] | None = None) -> None:
        self.root = Path(root)
        # called before every part is published; a run passes its lock's `verify`, so a warehouse deleted or
        # replaced mid-run fails the run instead of being recreated
        self.guard = guard

    @property
    def location(self) -> Path:
        return self.root

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
        if self.guard is not None:
            self.guard()
        return publish_table(table, self.results_dir / f"part-{run_id}-{seq:06d}.parquet", self.tmp_dir)

    def write_run(self, snapshot: dict[str, Any]) -> Path:
        table = rows_to_table([snapshot], RUN_SCHEMA)
        if self.guard is not None:
            self.guard()
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
        own_state_dir(self.tmp_dir)
        own_state_dir(dest.parent)
        tmp = self.tmp_dir / f"{dest.name}.{uuid.uuid4().hex}.tmp"
        try:
            with os.fdopen(open_private(tmp), "w") as fh:
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
        return clear_tmp(self.tmp_dir)
