"""A snapshot of the warehouse for the browser, and every query the pages run.

The views of `enrich.warehouse.views` are read once into an in-memory DuckDB database (`lib`: the `items`
view plus a sort key, a folder, an id and the text to search; small aggregates of `results` and `runs` for
the charts), so a page costs a query over one table, not the views' window functions over every part. The
snapshot is rebuilt when the warehouse's part files change (checked at most every `refresh_s`). Nothing here
writes to the warehouse: DuckDB reads the Parquet parts, and after the snapshot is built the connection
loses access to files altogether (`enable_external_access = false`).

Paging is keyset paging on (`_sort` descending, `path`): the next page starts after the last item shown, so
a page deep into 100,000 items costs what the first one does.

Search goes through one function, `text_search_condition`: the full-text index (`enrich search`'s) when it is
up to date, plain word matching otherwise.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import threading
import time
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from enrich.warehouse import search_index
from enrich.warehouse.views import _vanished, connect

PAGE_SIZE = 60
ITEM_ID = re.compile(r"^[0-9a-f]{16}$")
CONTENT_HASH = re.compile(r"^[0-9a-f]{64}$")

# Model-written and path columns searched as text (those that exist in this warehouse's schema).
SEARCH_COLUMNS = ["path", "caption", "description", "tags", "objects", "visible_text", "setting", "summary",
                  "transcript", "title", "document_type", "entities", "dates", "sounds", "scenes", "language",
                  "error_kind", "error"]
GALLERY_COLUMNS = ["_id", "path", "kind", "status", "error_kind", "caption", "tags", "content_hash", "_sort",
                   "cost_usd", "title", "summary", "run_id"]


@dataclass(frozen=True)
class Filters:
    """What the search box and the filters ask for; every field is optional ('' = any)."""

    q: str = ""
    kind: str = ""
    status: str = ""
    folder: str = ""
    date_from: str = ""  # YYYY-MM-DD, inclusive
    date_to: str = ""  # YYYY-MM-DD, inclusive
    profile: str = ""  # "" = every profile
    run: str = ""  # items whose current outcome this run wrote

    @classmethod
    def from_query(cls, params: Any) -> "Filters":
        return cls(**{f.name: str(params.get(f.name, "") or "").strip()[:500] for f in fields(cls)})

    def as_query(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    @property
    def active(self) -> bool:
        return bool(self.as_query())


@dataclass
class Page:
    items: list[dict[str, Any]]
    total: int  # items matching the filters
    next_cursor: str | None  # pass as `after` for the next page; None on the last page


def encode_cursor(sort: datetime, path: str) -> str:
    return base64.urlsafe_b64encode(f"{sort.isoformat()}\x00{path}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """(sort key, path) of the last item shown, or None for a cursor that is not ours (first page then)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        sort, path = raw.split("\x00", 1)
        return datetime.fromisoformat(sort), path
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def text_search_condition(con: duckdb.DuckDBPyConnection, q: str,
                          warehouse: str | Path | None = None) -> tuple[str, list[Any]]:
    """A WHERE condition on `lib` selecting the items that match the search words `q`, and its parameters.

    With an up-to-date full-text index under the warehouse (`enrich search` builds it; runs and compactions
    keep it fresh), the matches come from it: stemmed, accent-folded words, "phrases", `word*`, `-word`.
    Otherwise every word must occur (case-insensitively) in the item's path or any of its model-written text
    columns (`_text`, built once per snapshot from SEARCH_COLUMNS).
    """
    if warehouse is not None:
        paths = search_index.matching_paths(warehouse, q)
        if paths is not None:
            return "path IN (SELECT unnest(?::VARCHAR[]))", [paths]
    words = q.lower().split()[:16]
    if not words:
        return "", []
    return " AND ".join("contains(_text, ?)" for _ in words), words


class Snapshot:
    """The warehouse as of one listing of its parts, in an in-memory DuckDB database."""

    def __init__(self, warehouse: str | Path, signature: frozenset[str] = frozenset()) -> None:
        self.warehouse = Path(warehouse)
        self.signature = signature
        self.con = self._build()
        cur = self.con.cursor()
        self.columns: list[str] = [r[0] for r in cur.execute("DESCRIBE lib").fetchall()]
        self.kinds = [r[0] for r in cur.execute("SELECT DISTINCT kind FROM lib WHERE kind IS NOT NULL ORDER BY 1").fetchall()]
        self.statuses = [r[0] for r in cur.execute("SELECT DISTINCT status FROM lib ORDER BY 1").fetchall()]
        self.folders = [r[0] for r in cur.execute(
            "SELECT _folder FROM lib GROUP BY 1 ORDER BY 1 LIMIT 2000").fetchall()]
        # every row has a profile (rows from before profiles read as `detailed`); a file described with several
        # profiles has a card for each, and the filter appears once there is more than one to choose from
        self.profiles = [r[0] for r in cur.execute(
            "SELECT DISTINCT profile FROM lib WHERE profile IS NOT NULL ORDER BY 1").fetchall()]
        self.has_profile = len(self.profiles) > 1
        self.count = cur.execute("SELECT count(*) FROM lib").fetchone()[0]
        cur.close()

    def _build(self, attempts: int = 10) -> duckdb.DuckDBPyConnection:
        for attempt in range(attempts):
            con = duckdb.connect(":memory:")
            try:
                con.execute("SET TimeZone = 'UTC'")
                connect(self.warehouse, con)
                self._materialise(con)
                con.execute("SET enable_external_access = false")  # from here on no query can touch a file
                return con
            except duckdb.Error as exc:
                con.close()
                if not _vanished(exc) or attempt == attempts - 1:
                    raise
            time.sleep(0.05 * (attempt + 1))  # a compaction replaced a part we had listed: list again
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _materialise(con: duckdb.DuckDBPyConnection) -> None:
        # Read every committed row once into a table (one pass over the Parquet parts) ...
        con.execute("CREATE TABLE _res AS SELECT row_number() OVER () AS _rid, * FROM results")
        # ... and let the `current` view itself pick the current row per (path, profile), run over a narrow
        # projection of that table (its window functions then sort seven columns, not eighty: ~8x faster at
        # 100,000 rows). If the view ever needs another column, binding fails and it runs over the whole rows.
        try:
            con.execute("CREATE OR REPLACE VIEW results AS "
                        "SELECT _rid, path, profile, content_hash, status, finished_at, run_id FROM _res")
            con.execute("CREATE TABLE _pick AS SELECT _rid FROM current")
        except duckdb.Error:
            con.execute("CREATE OR REPLACE VIEW results AS SELECT * FROM _res")
            con.execute("CREATE OR REPLACE TABLE _pick AS SELECT _rid FROM current")
        types = {r[0]: r[1] for r in con.execute("DESCRIBE _res").fetchall()}
        texts = []
        for col in SEARCH_COLUMNS:
            if col in types:
                texts.append(f"array_to_string({col}, ' ')" if types[col].endswith("[]") else f"CAST({col} AS VARCHAR)")
        # Stored in gallery order, so the keyset condition on _sort skips whole row groups (zone maps).
        con.execute(f"""
            CREATE TABLE lib AS
            SELECT * EXCLUDE (_rid),
                   substr(md5(path || chr(0) || profile), 1, 16) AS _id,
                   coalesce(CAST(taken_at AS TIMESTAMP), timezone('UTC', mtime), timezone('UTC', finished_at),
                            TIMESTAMP '1970-01-01') AS _sort,
                   regexp_replace(path, '/[^/]*$', '') AS _folder,
                   lower(concat_ws(' ', {", ".join(texts)})) AS _text
            FROM _res WHERE _rid IN (SELECT _rid FROM _pick)
            ORDER BY _sort DESC, path""")
        con.execute("CREATE TABLE runs_s AS SELECT * FROM runs")
        con.execute("""
            CREATE TABLE agg_run AS
            SELECT run_id, coalesce(kind, 'other') AS kind, status, count(*) AS n,
                   sum(coalesce(input_tokens, 0)) AS input_tokens, sum(coalesce(output_tokens, 0)) AS output_tokens,
                   sum(coalesce(thinking_tokens, 0)) AS thinking_tokens, sum(coalesce(cost_usd, 0)) AS cost_usd
            FROM _res GROUP BY ALL""")
        con.execute("""
            CREATE TABLE agg_day AS
            SELECT CAST(timezone('UTC', finished_at) AS DATE) AS day, sum(coalesce(cost_usd, 0)) AS cost_usd,
                   count(*) AS n
            FROM _res WHERE finished_at IS NOT NULL GROUP BY ALL""")
        for view in ("items", "latest", "runs", "runs_all", "results"):
            con.execute(f"DROP VIEW IF EXISTS {view}")
        con.execute("DROP TABLE _pick")
        con.execute("DROP TABLE _res")

    def close(self) -> None:
        self.con.close()

    # -- queries (each on its own cursor: safe from any thread) --------------------------------------------

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cur = self.con.cursor()
        try:
            result = cur.execute(sql, params or [])
            names = [d[0] for d in result.description]
            return [dict(zip(names, row)) for row in result.fetchall()]
        finally:
            cur.close()

    def _where(self, f: Filters) -> tuple[str, list[Any]]:
        conds: list[str] = []
        params: list[Any] = []
        if f.q:
            cond, p = text_search_condition(self.con, f.q, self.warehouse)
            if cond:
                conds.append(f"({cond})")
                params += p
        for col, value in (("kind", f.kind), ("status", f.status), ("run_id", f.run)):
            if value:
                conds.append(f"{col} = ?")
                params.append(value)
        if f.profile and self.has_profile:
            conds.append("profile = ?")
            params.append(f.profile)
        if f.folder:
            conds.append("(_folder = ? OR starts_with(path, ?))")
            folder = f.folder.rstrip("/") or "/"
            params += [folder, folder + ("" if folder.endswith("/") else "/")]
        start, end = _parse_date(f.date_from), _parse_date(f.date_to)
        if start:
            conds.append("_sort >= ?")
            params.append(datetime.combine(start, datetime.min.time()))
        if end:
            conds.append("_sort < ?")
            params.append(datetime.combine(end + timedelta(days=1), datetime.min.time()))
        return (" AND ".join(conds) or "TRUE"), params

    def gallery(self, f: Filters, after: str = "", limit: int = PAGE_SIZE) -> Page:
        where, params = self._where(f)
        cursor = decode_cursor(after) if after else None
        page_where, page_params = "TRUE", []
        if cursor:
            # = (_sort < c OR (_sort = c AND path > p)), written so that `_sort <= c` prunes row groups
            page_where, page_params = "_sort <= ? AND (_sort < ? OR path > ?)", [cursor[0], cursor[0], cursor[1]]
        cols = ", ".join(c for c in GALLERY_COLUMNS if c in self.columns)
        # One pass over the filters (a search reads every item's text once, for the page and the count), the
        # top-N over the two sort columns alone (narrow: a few ms at 100,000 rows), then the page's other
        # columns for those rows only (lib is never modified, so its rowids are stable).
        if not params:  # no filter: the total is known, and the cursor condition prunes the stored order
            total = self.count
            rows = self._rows(f"SELECT {cols} FROM lib WHERE rowid IN (SELECT rowid FROM lib WHERE {page_where} "
                              f"ORDER BY _sort DESC, path LIMIT ?) ORDER BY _sort DESC, path", page_params + [limit + 1])
        else:
            rows = self._rows(
                f"WITH m AS MATERIALIZED (SELECT rowid AS _r, _sort, path FROM lib WHERE {where}), "
                f"p AS (SELECT _r FROM m WHERE {page_where} ORDER BY _sort DESC, path LIMIT ?) "
                f"SELECT {cols}, (SELECT count(*) FROM m) AS _total FROM lib WHERE rowid IN (SELECT _r FROM p) "
                f"ORDER BY _sort DESC, path",
                params + page_params + [limit + 1])
            total = rows[0]["_total"] if rows else self._rows(f"SELECT count(*) AS n FROM lib WHERE {where}", params)[0]["n"]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1]["_sort"], rows[-1]["path"]) if more and rows else None
        return Page(rows, total, nxt)

    def item(self, item_id: str) -> dict[str, Any] | None:
        if not ITEM_ID.match(item_id):
            return None
        rows = self._rows("SELECT * FROM lib WHERE _id = ? ORDER BY path LIMIT 1", [item_id])
        return rows[0] if rows else None

    def image_sources(self, content_hash: str) -> list[dict[str, Any]]:
        """The recorded image files with these bytes (a duplicate has several paths)."""
        if not CONTENT_HASH.match(content_hash):
            return []
        return self._rows("SELECT path, size_bytes, mtime FROM lib WHERE content_hash = ? AND kind = 'image' "
                          "ORDER BY path LIMIT 8", [content_hash])

    def runs(self, limit: int = 0) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM runs_s ORDER BY started_at DESC NULLS LAST, run_id DESC"
                          + (" LIMIT ?" if limit else ""), [limit] if limit else [])

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM runs_s WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def latest_run_id(self) -> str | None:
        rows = self.runs(limit=1)
        return rows[0]["run_id"] if rows else None

    # -- chart data ------------------------------------------------------------------------------------------

    def spend_per_run(self, limit: int = 30) -> list[tuple[str, float]]:
        """(the run's start, UTC, else its id; spend) for the latest `limit` runs, oldest first."""
        rows = self._rows("SELECT run_id, started_at, coalesce(spent_usd, 0) AS spent FROM runs_s "
                          "ORDER BY started_at DESC NULLS LAST, run_id DESC LIMIT ?", [limit])
        return [(r["started_at"].strftime("%Y-%m-%d %H:%M") if r["started_at"] else r["run_id"], float(r["spent"]))
                for r in reversed(rows)]

    def spend_per_day(self, days: int = 60) -> list[tuple[str, float]]:
        rows = self._rows("SELECT day, cost_usd FROM agg_day ORDER BY day DESC LIMIT ?", [days])
        return [(r["day"].isoformat(), float(r["cost_usd"])) for r in reversed(rows)]

    def items_by_status(self, run_id: str | None = None) -> list[tuple[str, int]]:
        """Current items by status; for a run, the rows that run wrote by status."""
        if run_id:
            rows = self._rows("SELECT status, sum(n) AS n FROM agg_run WHERE run_id = ? GROUP BY 1 ORDER BY 2 DESC, 1",
                              [run_id])
        else:
            rows = self._rows("SELECT status, count(*) AS n FROM lib GROUP BY 1 ORDER BY 2 DESC, 1")
        return [(r["status"], int(r["n"])) for r in rows]

    def tokens_by_kind(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Tokens spent per kind: every row ever written, or the rows of one run."""
        where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
        return self._rows(f"SELECT kind, sum(input_tokens) AS input, sum(output_tokens) AS output, "
                          f"sum(thinking_tokens) AS thinking, sum(cost_usd) AS cost_usd, sum(n) AS rows "
                          f"FROM agg_run {where} GROUP BY 1 ORDER BY 1", params)

    def totals(self) -> dict[str, Any]:
        row = self._rows("SELECT count(*) AS runs, sum(coalesce(spent_usd, 0)) AS spent FROM runs_s")[0]
        return {"items": self.count, "runs": row["runs"], "spent": row["spent"] or Decimal(0)}


def _signature(warehouse: Path) -> frozenset[str]:
    """The part files the snapshot was built from (a run or a compaction publishing one changes it)."""
    names: set[str] = set()
    for sub in ("results", "runs"):
        try:
            with os.scandir(warehouse / sub) as it:
                names.update(f"{sub}/{e.name}" for e in it if e.name.endswith(".parquet"))
        except FileNotFoundError:
            pass
    return frozenset(names)


class Library:
    """The current snapshot of one warehouse. Every `refresh_s` a request checks whether the warehouse's parts
    changed; if so a new snapshot is built in the background while the old one keeps serving, and replaces it
    when ready (requests never wait for a rebuild; only the first snapshot is built up front)."""

    def __init__(self, warehouse: str | Path, refresh_s: float = 2.0) -> None:
        self.warehouse = Path(warehouse)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._building = False
        self._checked = time.monotonic()
        self._snapshot = Snapshot(self.warehouse, _signature(self.warehouse))
        self.last_error: str | None = None

    def snapshot(self) -> Snapshot:
        if time.monotonic() - self._checked >= self.refresh_s:
            with self._lock:
                if time.monotonic() - self._checked >= self.refresh_s and not self._building:
                    self._checked = time.monotonic()
                    signature = _signature(self.warehouse)
                    if signature != self._snapshot.signature:
                        self._building = True
                        threading.Thread(target=self._rebuild, args=(signature,), name="enrich-browse-snapshot",
                                         daemon=True).start()
        return self._snapshot

    def _rebuild(self, signature: frozenset[str]) -> None:
        try:
            # the old snapshot is left to the garbage collector: a request may still be reading it
            self._snapshot = Snapshot(self.warehouse, signature)
            self.last_error = None
        except Exception as exc:  # keep serving the old snapshot; try again at the next check
            self.last_error = f"{exc.__class__.__name__}: {exc}"
        finally:
            with self._lock:
                self._building = False
                self._checked = time.monotonic()

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait for a rebuild in progress (tests)."""
        deadline = time.monotonic() + timeout
        while self._building and time.monotonic() < deadline:
            time.sleep(0.02)
