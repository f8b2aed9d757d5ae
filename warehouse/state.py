"""What the warehouse already knows, read once when a run starts (under the warehouse lock).

- `PathState` per path: its latest row (content hash, size, mtime, outcome, enrichment version).
- `Described` per (content hash, version): the latest `ok` row for those bytes, at any path, to copy from.
- `recover()`: the leftovers of a dead writer are cleaned before a new run writes anything: temp files,
  parts replaced by an interrupted compaction, and runs a killed process left `running` (marked `crashed`,
  with their figures recomputed from the rows they committed).

Read-only helpers here never import Prefect.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable

from enrich.schemas.vocab import RunStatus
from enrich.schemas.parquet import unread_sql
from enrich.warehouse.store import Warehouse
from enrich.warehouse.views import read_snapshot

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_us(ts: datetime | None) -> int | None:
    return None if ts is None else (ts - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PathState:
    content_hash: str | None
    size_bytes: int | None
    mtime_us: int | None
    status: str
    error_kind: str | None
    error: str | None
    version: str | None
    kind: str | None = None
    mime: str | None = None


@dataclass(frozen=True, slots=True)
class Described:
    """An `ok` row to copy a description from."""

    path: str
    run_id: str
    version: str | None


@dataclass
class WarehouseState:
    # keyed by (path, profile) and (content hash, profile): a file has one current row per profile
    by_path: dict[tuple[str, str], PathState] = field(default_factory=dict)
    ok_by_hash: dict[tuple[str, str], dict[str | None, Described]] = field(default_factory=dict)


def load_state(warehouse: Warehouse) -> WarehouseState:
    def read(con) -> WarehouseState:
        state = WarehouseState()
        # the latest row per (path, profile), except that a transient read error (no hash) does not hide an
        # earlier row: once the file reads again, its bytes are compared with what was described, not sent again
        for (path, profile, h, size, mtime_us, status, error_kind, error, version, kind, mime) in con.execute(
            "SELECT path, profile, content_hash, size_bytes, epoch_us(mtime), status, error_kind, error, "
            "enrichment_version, kind, mime FROM results "
            f"QUALIFY row_number() OVER (PARTITION BY path, profile ORDER BY {unread_sql()}, "
            "finished_at DESC NULLS LAST, run_id DESC) = 1"
        ).fetchall():
            state.by_path[(path, profile)] = PathState(h, size, mtime_us, status, error_kind, error, version, kind,
                                                       mime)
        for h, profile, version, path, run_id in con.execute(
            """SELECT content_hash, profile, enrichment_version, path, run_id FROM results
               WHERE status = 'ok' AND content_hash IS NOT NULL
               QUALIFY row_number() OVER (PARTITION BY content_hash, profile, enrichment_version
                                          ORDER BY finished_at DESC NULLS LAST, run_id DESC) = 1"""
        ).fetchall():
            state.ok_by_hash.setdefault((h, profile), {})[version] = Described(path, run_id, version)
        return state

    return read_snapshot(warehouse.location, read)


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def load_rows(warehouse: Warehouse, refs: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Full rows by (run_id, path, profile). Parts hold paths in walk order, so the Parquet min/max
    statistics on `path` let DuckDB skip most row groups."""
    refs = set(refs)
    if not refs:
        return {}
    sql = f"SELECT * FROM results WHERE path IN ({_sql_list(sorted({p for _, p, _ in refs}))})"
    rows = read_snapshot(warehouse.location, lambda con: con.sql(sql).to_arrow_table().to_pylist())
    return {(r["run_id"], r["path"], r["profile"]): r for r in rows
            if (r["run_id"], r["path"], r["profile"]) in refs}


# --------------------------------------------------------------------------------------------------
# recovery after a dead writer


def mark_crashed_runs(warehouse: Warehouse, marked_by: str) -> list[str]:
    """Runs whose latest snapshot says `running` while we hold the lock belong to a dead process: record
    them as `crashed`, with items and spend recomputed from the rows they committed. Returns their ids."""

    def read(con):
        snaps = con.sql("SELECT * FROM runs WHERE status = 'running'").to_arrow_table().to_pylist()
        if not snaps:
            return snaps, {}
        ids = _sql_list(s["run_id"] for s in snaps)
        figures = con.sql(
            f"""SELECT run_id, count(*) AS items,
                       count(*) FILTER (status = 'ok') AS ok, count(*) FILTER (status = 'error') AS errors,
                       count(*) FILTER (status = 'skipped') AS skipped,
                       count(*) FILTER (status = 'blocked') AS blocked,
                       count(*) FILTER (status = 'over_budget') AS over_budget,
                       count(*) FILTER (status = 'gone') AS gone,
                       count(*) FILTER (reused_from IS NOT NULL) AS reused,
                       sum(input_tokens) AS input_tokens,
                       sum(output_tokens + thinking_tokens) AS output_tokens,
                       sum(cost_usd) AS spent_usd, sum(cost_usd) AS committed_usd,
                       max(finished_at) AS last_row_at
                FROM results WHERE run_id IN ({ids}) GROUP BY run_id"""
        ).to_arrow_table().to_pylist()
        billed = dict(con.execute(
            f"SELECT run_id, sum(cost_usd) FROM ledger WHERE run_id IN ({ids}) GROUP BY run_id").fetchall())
        figures = {f["run_id"]: f for f in figures}
        for run_id, usd in billed.items():  # billed requests whose rows never committed count too
            fig = figures.setdefault(run_id, {})
            fig["spent_usd"] = max(fig.get("spent_usd") or Decimal(0), usd)
        return snaps, figures

    snaps, figures = read_snapshot(warehouse.location, read)
    marked = []
    for snap in snaps:
        fig = figures.get(snap["run_id"], {})
        new = dict(snap)
        new.update(
            seq=int(snap["seq"]) + 1,
            status=RunStatus.CRASHED,
            finished_at=fig.get("last_row_at") or snap.get("started_at"),
            message=f"the process died while running; marked crashed by run {marked_by}; "
                    "its committed rows are kept and the next run carried on from them"
                    + ("; spent_usd includes requests billed before their rows could be committed"
                       if (fig.get("spent_usd") or 0) > (fig.get("committed_usd") or 0) else ""),
        )
        for key in ("items", "ok", "errors", "skipped", "blocked", "over_budget", "gone", "reused",
                    "input_tokens", "output_tokens"):
            new[key] = int(fig.get(key) or 0)
        new["spent_usd"] = fig.get("spent_usd") or Decimal(0)
        warehouse.write_run(new)
        marked.append(snap["run_id"])
    return marked


def recover(warehouse: Warehouse, marked_by: str) -> dict[str, Any]:
    """Clean what a killed writer left. Call only while holding the warehouse lock."""
    from enrich.warehouse.compact import remove_replaced

    return {
        "tmp_files_removed": warehouse.clean_tmp(),
        "replaced_parts_removed": 0 if warehouse.remote else remove_replaced(warehouse),
        "runs_marked_crashed": mark_crashed_runs(warehouse, marked_by),
    }
