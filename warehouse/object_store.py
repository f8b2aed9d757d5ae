"""The warehouse on object storage (`--warehouse s3://bucket/prefix`, `gs://bucket/prefix` or
`az://container/prefix`): Delta Lake tables written with `deltalake`.

Same interface as the folder warehouse (warehouse/store.py `Warehouse`), so flows/pipeline.py and
flows/dask_runner.py commit chunks and record runs the same way; the views (warehouse/views.py) are the same SQL.
Every store goes through the same code: what differs between S3, GCS and Azure (environment, secrets, options) is
declared once in warehouse/object_stores.py.

Layout under the URL:
    results/    a Delta table, one row per item outcome; one append commit per chunk
    runs/       a Delta table of run snapshots
    profiles/   a Delta table of the profiles runs asked (name, doc_json, recorded_at): the profile_<name> views
    _lock       the run lock (warehouse/object_lock.py)

Commits: each chunk is one Delta transaction (`write_deltalake`, mode append). The commit is the conditional
create of the next `_delta_log/NNN.json` (S3: If-None-Match: *, storage option `conditional_put=etag`; GCS: a
generation-match of 0; Azure: If-None-Match: *), so a chunk's rows are all visible or none are, and concurrent
writers (Dask workers) never overwrite each other's commit.
Exactly once per chunk: the commit carries a Delta app transaction `app_id=<run_id>/<seq>`; an attempt that finds
that id in the table (a redone chunk whose first attempt committed) appends nothing. The app id names the chunk,
not the run (the issue's sketch was app_id=run, version=seq): a Delta app transaction records only the highest
version per app id, and chunks of one run commit out of order, so a run-wide id would hide uncommitted chunks.

Readers take `DeltaTable(...).to_pyarrow_dataset()`: the files of one table version, so a query never sees part
of a commit, and register it in DuckDB (no DuckDB extension needed). Python-side reads of such a dataset use
`use_threads=False`: with pyarrow's threaded scanner over deltalake's filesystem, the process aborted at exit
("terminate called without an active exception", exit 134) in most runs, after a successful read.

What stays on the machine that starts the run, under `$ENRICH_HOME/remote/<bucket>/<prefix>/`: the spend ledger
of billed requests not yet committed (warehouse/ledger.py; appended per request, which object storage cannot do)
and temp files. Batch jobs, evaluations, the search index, `browse` and `search` are not available on object
storage yet (`export xmp` reads the rows through the views and writes sidecars locally).

Credentials and the endpoint come only from each store's standard environment (AWS_*, GOOGLE_*, AZURE_*: see
warehouse/object_stores.py), read by deltalake and obstore themselves: nothing here passes them on, and every
error raised here has them masked (`scrub`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa

from enrich.schemas.parquet import RESULT_SCHEMA, RUN_SCHEMA
from enrich.settings import is_object_url
from enrich.warehouse.object_stores import (  # noqa: F401 - ObjectStoreError and scrub are this module's API too
    ObjectStoreError, check_reachable, fail, register_secrets, scrub, table_options,
)
from enrich.warehouse.store import (
    RESULTS_DIR, RUNS_DIR, PROFILES_DIR, TMP_DIR, WarehouseUnusable, clear_tmp, rows_to_table,
)

PROFILE_SCHEMA = pa.schema([pa.field("name", pa.string()), pa.field("doc_json", pa.string()),
                            pa.field("recorded_at", pa.timestamp("us", tz="UTC"))])
REMOTE_DIR = "remote"
COMMIT_ATTEMPTS = 5


def staging_dir(url: str) -> Path:
    """This machine's folder for the warehouse's local state (spend ledger, temp files)."""
    from enrich.settings import resolve_paths

    home = resolve_paths(dict(os.environ))[0]
    rest = url.split("://", 1)[1]
    return home / REMOTE_DIR / Path(*[p for p in rest.split("/") if p not in ("", ".", "..")])


def _table_missing(exc: BaseException) -> bool:
    from deltalake.exceptions import TableNotFoundError

    return isinstance(exc, TableNotFoundError)


class ObjectWarehouse:
    """A warehouse at `s3://`, `gs://` or `az://` + bucket/prefix. Cheap to construct; the tables are created on
    first write."""

    remote = True

    def __init__(self, url: str, guard: Callable[[], None] | None = None) -> None:
        if not is_object_url(url):
            raise ValueError(f"not an object-storage URL: {url!r}")
        self.url = url.rstrip("/")
        self.guard = guard
        self.options = table_options(self.url)  # deltalake's storage options for this kind of store
        register_secrets()
        self._created: set[str] = set()
        self._creating = threading.Lock()
        self.root = staging_dir(self.url)  # local state only (ledger, temp files); the data is at self.url

    @property
    def location(self) -> str:
        return self.url

    @property
    def tmp_dir(self) -> Path:
        return self.root / TMP_DIR

    def table_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    # -- reading ------------------------------------------------------------------------------------------------
    def table(self, name: str):
        """The table's latest version, or None when it does not exist yet."""
        from deltalake import DeltaTable

        try:
            return DeltaTable(self.table_url(name), storage_options=dict(self.options))
        except Exception as exc:  # noqa: BLE001 - any client error is reported without credentials
            if _table_missing(exc):
                return None
            raise fail(f"cannot read the warehouse table {self.table_url(name)}", exc) from None

    def exists(self) -> bool:
        return any(self.table(name) is not None for name in (RUNS_DIR, RESULTS_DIR))

    def dataset(self, name: str):
        """A pyarrow dataset over one version of the table (None when the table does not exist)."""
        dt = self.table(name)
        if dt is None:
            return None
        try:
            return dt.to_pyarrow_dataset()
        except Exception as exc:  # noqa: BLE001
            raise fail(f"cannot read the warehouse table {self.table_url(name)}", exc) from None

    def register_sources(self, con, empty_results: str, empty_runs: str) -> tuple[str, str]:
        """Register the results and runs tables (one snapshot each) in DuckDB: the SELECTs the views read from,
        with every current column first (as the folder warehouse's `_source_sql`)."""
        out = []
        for name, schema, empty in ((RESULTS_DIR, RESULT_SCHEMA, empty_results), (RUNS_DIR, RUN_SCHEMA, empty_runs)):
            con.register(empty, schema.empty_table())
            ds = self.dataset(name)
            if ds is None:
                out.append(f"SELECT * FROM {empty}")
                continue
            con.register(f"{empty}_delta", ds)
            out.append(f"SELECT * FROM {empty} UNION ALL BY NAME SELECT * FROM {empty}_delta")
        return out[0], out[1]

    def result_files(self) -> list[str]:
        """The committed data files of the results table (for 'is there anything' checks)."""
        dt = self.table(RESULTS_DIR)
        return [] if dt is None else list(dt.file_uris())

    def run_files(self) -> list[str]:
        dt = self.table(RUNS_DIR)
        return [] if dt is None else list(dt.file_uris())

    def profile_docs(self) -> dict[str, dict[str, Any]]:
        ds = self.dataset(PROFILES_DIR)
        if ds is None:
            return {}
        out: dict[str, tuple[datetime, dict]] = {}
        for row in ds.to_table(use_threads=False).to_pylist():
            try:
                doc = json.loads(row["doc_json"])
                name = str(doc["name"])
            except (ValueError, KeyError, TypeError):
                continue
            if name not in out or row["recorded_at"] >= out[name][0]:
                out[name] = (row["recorded_at"], doc)
        return {name: doc for name, (_, doc) in sorted(out.items())}

    # -- writing ------------------------------------------------------------------------------------------------
    def _ensure(self, name: str, schema: pa.Schema) -> None:
        """Create the table (version 0: its schema and protocol) unless it exists. Writers racing to create it
        (the run's first chunks): one commit of version 0 wins, the others find the table and go on; without
        this, concurrent first appends would each try to set the protocol and all but one fail."""
        from deltalake import DeltaTable

        with self._creating:  # threads of one process create it once (racing creates can commit it twice)
            if name in self._created:
                return
            if self.table(name) is None:
                try:
                    DeltaTable.create(self.table_url(name), schema=schema, mode="ignore",
                                      storage_options=dict(self.options))
                except Exception as exc:  # noqa: BLE001
                    if self.table(name) is None:
                        raise fail(f"cannot create the warehouse table {self.table_url(name)}", exc) from None
            self._created.add(name)

    def _append(self, name: str, table: pa.Table, app_id: str | None = None,
                guard: Callable[[], None] | None = None) -> bool:
        """Append `table` in one Delta commit; with `app_id`, exactly once: False (nothing written) when a commit
        carrying that app transaction is in the table already. True: this call committed it. `guard` runs just
        before writing (the run lock's check: nothing is written by a run that lost its lock)."""
        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError

        self._ensure(name, table.schema)
        props = CommitProperties(app_transactions=[Transaction(app_id=app_id, version=1)]) if app_id else None
        for attempt in range(COMMIT_ATTEMPTS):
            # The check and the commit use one snapshot: the commit is built on the version the check read, so
            # an attempt of the same chunk that committed after it is a conflict Delta refuses ("concurrent
            # transaction"), never a second append. (Writing by URL would load a newer version, one that may
            # already hold the other attempt's commit, and append again: seen with two attempts racing.)
            snapshot = self.table(name)
            if app_id and snapshot is not None and snapshot.transaction_version(app_id) is not None:
                return False
            if guard is not None:
                guard()
            try:
                if snapshot is None:
                    write_deltalake(self.table_url(name), table, mode="append", schema_mode="merge",
                                    storage_options=dict(self.options), commit_properties=props)
                else:
                    write_deltalake(snapshot, table, mode="append", schema_mode="merge", commit_properties=props)
                return True
            except Exception as exc:  # noqa: BLE001
                # Appends never conflict with appends (deltalake retries those itself). A commit of the same app
                # transaction, or of the table's metadata or protocol (a schema change, its creation committed
                # twice by processes racing), does: look again on the new version (the check above answers the
                # first case), then write on it.
                if isinstance(exc, CommitFailedError) and attempt + 1 < COMMIT_ATTEMPTS:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise fail(f"cannot commit to the warehouse table {self.table_url(name)}", exc) from None
        return False  # not reached: the last attempt returns or raises

    def _txn_committed(self, name: str, app_id: str) -> bool:
        dt = self.table(name)
        return dt is not None and dt.transaction_version(app_id) is not None

    def chunk_committed(self, run_id: str, seq: int) -> bool:
        """True when a commit of this chunk (any attempt) is in the results table."""
        return self._txn_committed(RESULTS_DIR, chunk_app_id(run_id, seq))

    def commit_chunk_once(self, rows: list[dict[str, Any]], run_id: str, seq: int) -> bool:
        """Append the chunk's rows in one Delta commit unless an attempt of the same chunk already committed
        (True: this call did). Two attempts racing: Delta's conflict check refuses the second commit (same app
        id), which then finds the first one's and returns False."""
        if not rows:
            return False
        # one table load: _append's check of the app transaction is the "already committed" answer
        return self._append(RESULTS_DIR, rows_to_table(rows, RESULT_SCHEMA), chunk_app_id(run_id, seq),
                            guard=self.guard)

    def chunk_rows(self, run_id: str, keys: Iterable[tuple[str, str]], columns: list[str]) -> list[dict[str, Any]]:
        """The committed rows of a run for these (path, profile) keys (a chunk an earlier attempt committed: the
        run's other chunks may hold the same paths for other profiles)."""
        import pyarrow.compute as pc

        keys = set(keys)
        ds = self.dataset(RESULTS_DIR)
        if ds is None or not keys:
            return []
        paths = pa.array(sorted({p for p, _ in keys}), pa.string())
        flt = (pc.field("run_id") == run_id) & pc.field("path").isin(paths)
        rows = ds.to_table(filter=flt, columns=sorted({*columns, "path", "profile"}),
                           use_threads=False).to_pylist()
        return [{c: r[c] for c in columns} for r in rows if (r["path"], r["profile"]) in keys]

    def write_results(self, rows: list[dict[str, Any]], run_id: str, seq: int) -> str | None:
        if not rows:
            return None
        self.commit_chunk_once(rows, run_id, seq)
        return self.table_url(RESULTS_DIR)

    def write_run(self, snapshot: dict[str, Any]) -> str:
        table = rows_to_table([snapshot], RUN_SCHEMA)
        if self.guard is not None:
            self.guard()
        # the run's first snapshot (`running`) is written before any chunk: the results table is created then,
        # by the run's one process, not by its first chunks racing (on Dask workers, in other processes)
        self._ensure(RESULTS_DIR, RESULT_SCHEMA)
        self._append(RUNS_DIR, table)
        return self.table_url(RUNS_DIR)

    def write_profile(self, doc: dict[str, Any]) -> str:
        """Record a profile's fields unless the latest record of that name says the same."""
        if self.profile_docs().get(str(doc["name"])) != doc:
            self._append(PROFILES_DIR, pa.Table.from_pylist(
                [{"name": str(doc["name"]), "doc_json": json.dumps(doc, sort_keys=True),
                  "recorded_at": datetime.now(timezone.utc)}], schema=PROFILE_SCHEMA))
        return self.table_url(PROFILES_DIR)

    def compact(self) -> dict[str, tuple[int, int]]:
        """Delta's OPTIMIZE (bin-packing) of the results and runs tables: per table, (data files before, after).
        One commit per table; the replaced files stay (no VACUUM), so a reader holding an older version still
        reads it whole, and appends committing meanwhile do not conflict with it."""
        out = {}
        for name in (RESULTS_DIR, RUNS_DIR):
            dt = self.table(name)
            if dt is None:
                continue
            before = len(dt.file_uris())
            if self.guard is not None:
                self.guard()
            try:
                dt.optimize.compact()
            except Exception as exc:  # noqa: BLE001
                raise fail(f"cannot compact the warehouse table {self.table_url(name)}", exc) from None
            out[name] = (before, len(self.table(name).file_uris()))
        return out

    def clean_tmp(self) -> int:
        return clear_tmp(self.tmp_dir)


def copy_folder_warehouse(source, target: ObjectWarehouse, progress: Callable[[str], None] | None = None
                          ) -> dict[str, int]:
    """Copy a folder warehouse (warehouse/store.py `Warehouse`) into `target`: its live result and run parts
    (those a compaction replaced are left out, as readers do) and its profile records. Each part is one Delta
    commit carrying the app transaction `enrich-migrate/<folder>/<part>`, so copying again after an interruption
    (or twice) copies only what is missing. The caller holds both warehouses' locks. Returns parts copied and
    skipped per table."""
    import pyarrow.parquet as pq

    done = {"results": 0, "runs": 0, "skipped": 0, "profiles": 0}
    for name, files, schema in ((RESULTS_DIR, source.result_files(), RESULT_SCHEMA),
                                (RUNS_DIR, source.run_files(), RUN_SCHEMA)):
        target._ensure(name, schema)
        for part in files:
            app_id = f"enrich-migrate/{name}/{part.name}"
            if target._txn_committed(name, app_id):
                done["skipped"] += 1
                continue
            table = pq.read_table(part)
            # parts written before a column existed lack it: the table has every current column
            rows = table.to_pylist()
            if not target._append(name, rows_to_table(rows, schema), app_id):
                done["skipped"] += 1  # another migrate copying the same folder got there first
                continue
            done[name] += 1
            if progress is not None:
                progress(f"{name}/{part.name}: {len(rows)} rows")
    for doc in source.profile_docs().values():
        target.write_profile(doc)
        done["profiles"] += 1
    return done


def chunk_app_id(run_id: str, seq: int) -> str:
    return f"enrich-chunk/{run_id}/{int(seq):06d}"


def check_readable(url: str) -> None:
    if not ObjectWarehouse(url).exists():
        raise WarehouseUnusable(f"there is no warehouse at {url} (nothing has been run into it; "
                                "see --warehouse and ENRICH_WAREHOUSE)")


def check_writable(url: str) -> None:
    """Before a run starts: the bucket answers with these credentials (a table that exists must be readable;
    writing is proven by taking the lock, the run's first write)."""
    check_reachable(url)
    ObjectWarehouse(url).exists()
