"""Full-text search over the warehouse's descriptions: an SQLite FTS5 index beside the Parquet parts.

The index is derived data: `<warehouse>/index/search.sqlite`, one document per path of the `items` view
(every status, so filters can ask for errors too), with the description text in a few weighted columns and
the filterable facts (kind, status, date, path) in a plain table. It is rebuilt whole from a snapshot of the
committed parts into a temp file in the same folder and published by os.replace(), so a reader has either
the old index or the new one open, never half of one (readers open it read-only and immutable).

It records a fingerprint of the part files it was built from; `ensure_fresh()` rebuilds when the warehouse
changed (a run, a compaction, a copy from elsewhere) or the index format did. `enrich search` calls it
before searching (the first search builds the index); once an index exists, a run refreshes it at its end
(flows/pipeline.py close_run) and `enrich compact` after merging.

Engine: SQLite FTS5 from Python's sqlite3, tokenizer `porter unicode61 remove_diacritics 2` (case and
accents folded, English stemming), bm25 ranking. Why not DuckDB's fts or tantivy: README, "Search".

Queries are never SQL or FTS5 syntax from the user: `compile_query()` reads words, "quoted phrases",
`word*` prefixes, `-word` exclusions and `OR`, and writes an FTS5 expression whose terms are all quoted
word characters; filter values are bound parameters.
"""
from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Iterable

from enrich.warehouse.store import RESULTS_DIR

INDEX_DIR = "index"
INDEX_FILE = "search.sqlite"
FORMAT_VERSION = "3"
TOKENIZER = "porter unicode61 remove_diacritics 2"

# index column -> (warehouse columns folded into it, bm25 weight). Whatever description columns a row has
# are read; a column the warehouse lacks is skipped. Profiles (several descriptions per file) would add a
# `profile` column to the `items` table and index one document per (path, profile).
FIELDS: dict[str, tuple[tuple[str, ...], float]] = {
    "name": (("_name",), 2.0),  # the file name and its two parent folders, split into words
    "title": (("title",), 4.0),
    "caption": (("caption",), 4.0),
    "tags": (("tags", "objects", "entities", "sounds"), 3.0),
    "body": (("description", "summary", "setting", "scenes", "document_type", "dates"), 1.0),
    "text": (("visible_text", "transcript"), 0.8),
}
STATUSES_HIDDEN = ("gone",)


class IndexMissing(Exception):
    """There is no index and none could be built (no warehouse, or nothing in it)."""


def index_path(warehouse: str | Path) -> Path:
    return Path(warehouse) / INDEX_DIR / INDEX_FILE


def fingerprint(warehouse: str | Path) -> str:
    """Names, sizes and mtimes of the result parts: parts are immutable, so any run or compaction changes it."""
    h = hashlib.sha256(FORMAT_VERSION.encode())
    folder = Path(warehouse) / RESULTS_DIR
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return "none"
    for e in entries:
        if e.name.endswith(".parquet"):
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            h.update(f"{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --- building -----------------------------------------------------------------------------------------------
def _select_sql(types: dict[str, str]) -> str:
    """The items view's rows as index documents; `types` maps the view's columns to their DuckDB types."""
    columns = set(types)

    def text_of(col: str) -> str | None:
        if col == "_name":  # the file name and the two folders above it ("2025-summer/beach.jpg")
            return "array_to_string(list_slice(string_split(path, '/'), -3, -1), ' ')"
        if col not in columns:
            return None
        if types[col].endswith("[]"):
            return f"array_to_string(\"{col}\", ' ; ')"
        return f"CAST(\"{col}\" AS VARCHAR)"

    parts = []
    for name, (cols, _) in FIELDS.items():
        exprs = [e for e in (text_of(c) for c in cols) if e]
        parts.append(f"concat_ws(' ; ', {', '.join(exprs)}) AS {name}" if exprs else f"NULL AS {name}")
    date_expr = ("coalesce(strftime(taken_at, '%Y-%m-%dT%H:%M:%S'), strftime(mtime, '%Y-%m-%dT%H:%M:%S'))"
                 if {"taken_at", "mtime"} <= columns else "NULL")
    kind = "kind" if "kind" in columns else "NULL"
    return (f"SELECT path, {kind} AS kind, status, {date_expr} AS date, {', '.join(parts)} FROM items "
            f"WHERE status NOT IN ({', '.join(repr(s) for s in STATUSES_HIDDEN)})")


def _read_rows(warehouse: str | Path) -> list[tuple]:
    from enrich.warehouse.views import read_snapshot

    def run(con) -> list[tuple]:
        con.execute("SET enable_progress_bar = false")
        try:
            con.execute("SET TimeZone = 'UTC'")  # file dates (mtime, UTC) print as UTC
        except Exception:  # pragma: no cover - DuckDB without ICU has only UTC anyway
            pass
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE items)").fetchall())
        return con.execute(_select_sql(types)).fetchall()

    return read_snapshot(warehouse, run)


@dataclass
class BuildReport:
    rows: int
    seconds: float        # wall clock, the whole build
    path: Path
    read_seconds: float = 0.0  # of which reading the warehouse (DuckDB)
    cpu_seconds: float = 0.0   # CPU time of this process (all threads): what a busy machine does not inflate


def build(warehouse: str | Path) -> BuildReport:
    """Rebuild the index from a snapshot of the warehouse and publish it atomically."""
    started, cpu = time.perf_counter(), time.process_time()
    warehouse = Path(warehouse)
    fp = fingerprint(warehouse)  # taken before reading: a part published meanwhile makes it stale, not wrong
    rows = _read_rows(warehouse)
    read_s = time.perf_counter() - started
    dest = index_path(warehouse)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest.parent)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    try:
        con = sqlite3.connect(tmp)
        try:
            cols = ", ".join(FIELDS)
            con.executescript(
                f"""
                PRAGMA journal_mode = OFF;
                PRAGMA synchronous = OFF;
                PRAGMA cache_size = -262144;
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
                CREATE TABLE items (id INTEGER PRIMARY KEY, path TEXT NOT NULL, kind TEXT, status TEXT, date TEXT);
                CREATE TABLE docs (id INTEGER PRIMARY KEY, {cols});
                CREATE VIRTUAL TABLE fts USING fts5({cols}, content = 'docs', content_rowid = 'id',
                                                    tokenize = '{TOKENIZER}');
                INSERT INTO fts (fts, rank) VALUES ('automerge', 0);
                """
            )
            # items: what filters read (narrow rows); docs: the text, stored once as the index's external
            # content, so inserting is plain rows and the index is built by 'rebuild' in one pass inside
            # SQLite, merged once ('optimize') rather than as it grows.
            con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", ((i, *r[:4]) for i, r in enumerate(rows, 1)))
            placeholders = ", ".join("?" * (len(FIELDS) + 1))
            con.executemany(f"INSERT INTO docs VALUES ({placeholders})", ((i, *r[4:]) for i, r in enumerate(rows, 1)))
            con.execute("INSERT INTO fts (fts) VALUES ('rebuild')")
            con.execute("INSERT INTO fts (fts) VALUES ('optimize')")
            con.execute("INSERT INTO fts (fts, rank) VALUES ('automerge', 4)")
            con.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("fingerprint", fp), ("format", FORMAT_VERSION), ("rows", str(len(rows))),
                ("built_at", datetime.now().astimezone().isoformat(timespec="seconds"))])
            con.commit()
        finally:
            con.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BuildReport(len(rows), time.perf_counter() - started, dest, read_s, time.process_time() - cpu)


def _remove_stale_temps(folder: Path, older_than_s: float = 600) -> None:
    """Temp files of a killed build (a concurrent build's newer ones are left alone)."""
    now = time.time()
    for p in folder.glob(f".{INDEX_FILE}.*.tmp"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink(missing_ok=True)
        except FileNotFoundError:
            pass


def stored_meta(warehouse: str | Path) -> dict[str, str] | None:
    path = index_path(warehouse)
    if not path.is_file():
        return None
    try:
        con = _open(path)
        try:
            return dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None  # not an index we can read: rebuild it


def is_fresh(warehouse: str | Path) -> bool:
    meta = stored_meta(warehouse)
    return bool(meta) and meta.get("format") == FORMAT_VERSION and meta.get("fingerprint") == fingerprint(warehouse)


def ensure_fresh(warehouse: str | Path, only_if_present: bool = False) -> BuildReport | None:
    """Rebuild the index if the warehouse changed since it was built (or it is missing). None if it was fresh
    or there is no warehouse to index. `only_if_present`: keep an existing index fresh, build none (what a
    run and a compaction do: a library nobody searches costs nothing)."""
    warehouse = Path(warehouse)
    if not (warehouse / RESULTS_DIR).is_dir():
        return None
    if only_if_present and not index_path(warehouse).is_file():
        return None
    if is_fresh(warehouse):
        return None
    return build(warehouse)


# --- querying -----------------------------------------------------------------------------------------------
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class CompiledQuery:
    all_terms: str | None   # every positive term must match (AND)
    any_terms: str | None   # at least one (OR): used when nothing matches them all
    terms: list[str] = field(default_factory=list)


def _phrase(text: str, prefix: bool = False) -> str | None:
    words = _WORD.findall(text)
    if not words:
        return None
    return '"' + " ".join(words) + '"' + ("*" if prefix else "")


def compile_query(text: str) -> CompiledQuery:
    """The user's words as an FTS5 expression made only of quoted word runs, AND, OR, NOT and parentheses.

    Supported: plain words (all must match), "a phrase", word* (prefix), -word / -"a phrase" (exclude), and
    OR between words. Anything else (quotes left open, colons, parentheses, SQL) is read as words."""
    groups: list[list[str]] = [[]]
    negative: list[str] = []
    for m in _TOKEN.finditer(text or ""):
        neg, quoted, bare = m.group(1), m.group(2), m.group(3)
        if bare == "OR":
            if groups[-1]:
                groups.append([])
            continue
        if quoted is not None:
            term = _phrase(quoted)
        else:
            if bare.startswith("-") and len(bare) > 1:
                neg, bare = "-", bare[1:]
            term = _phrase(bare, prefix=bare.endswith("*") and bool(_WORD.search(bare)))
        if term is None:
            continue
        (negative if neg else groups[-1]).append(term)
    groups = [g for g in groups if g]
    if not groups:
        return CompiledQuery(None, None)
    all_expr = " OR ".join("(" + " AND ".join(g) + ")" for g in groups)
    flat = [t for g in groups for t in g]
    any_expr = " OR ".join(flat) if len(flat) > 1 else None
    if negative:
        nots = " NOT (" + " OR ".join(negative) + ")"
        all_expr = f"({all_expr}){nots}"
        any_expr = f"({any_expr}){nots}" if any_expr else None
    return CompiledQuery(all_expr, any_expr, flat)


@dataclass
class Filters:
    kind: str | None = None
    status: str | None = None
    since: str | None = None  # inclusive, ISO date or date-time
    until: str | None = None  # inclusive: a date means the whole day
    path_glob: str | None = None

    def sql(self) -> tuple[str, list[Any]]:
        where, params = [], []
        if self.kind:
            where.append("i.kind = ?")
            params.append(self.kind)
        if self.status:
            where.append("i.status = ?")
            params.append(self.status)
        if self.since:
            where.append("i.date >= ?")
            params.append(_iso(self.since))
        if self.until:
            bound, inclusive = _until(self.until)
            where.append("i.date <= ?" if inclusive else "i.date < ?")
            params.append(bound)
        if self.path_glob:
            where.append("i.path GLOB ?")
            params.append(self.path_glob)
        return ("".join(f" AND {w}" for w in where)), params


def parse_day(value: str) -> date | datetime:
    """YYYY-MM-DD or an ISO date-time; ValueError otherwise."""
    try:
        return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a date: {value!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)") from None


def _iso(value: str) -> str:
    d = parse_day(value)
    return d.isoformat() if isinstance(d, date) and not isinstance(d, datetime) else d.replace(tzinfo=None).isoformat()


def _until(value: str) -> tuple[str, bool]:
    d = parse_day(value)
    if isinstance(d, datetime):
        return d.replace(tzinfo=None).isoformat(), True
    return (d + timedelta(days=1)).isoformat(), False


@dataclass
class Hit:
    path: str
    kind: str | None
    status: str | None
    date: str | None
    score: float
    snippet: str


@dataclass
class SearchResult:
    hits: list[Hit]
    matched: str  # "all" (every word matched) or "any" (no file had them all)
    indexed: int


def _open(path: Path) -> sqlite3.Connection:
    # immutable: the file is never changed in place (a rebuild replaces it), so no locks and no journal
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)


def search(warehouse: str | Path, query: str, filters: Filters | None = None, limit: int = 20) -> SearchResult:
    path = index_path(warehouse)
    if not path.is_file():
        raise IndexMissing(f"no search index at {path}")
    compiled = compile_query(query)
    con = _open(path)
    try:
        indexed = int(dict(con.execute("SELECT key, value FROM meta").fetchall()).get("rows", 0))
        if compiled.all_terms is None:
            return SearchResult([], "all", indexed)
        where, params = (filters or Filters()).sql()
        # Rank first, reading only the narrow items table for filters; then fetch paths and snippets for the
        # few hits shown (a snippet per hit, so it is never computed for every match).
        join = " JOIN items i ON i.id = fts.rowid" if where else ""
        weights = ", ".join(str(w) for _, w in FIELDS.values())
        # bm25() with the weights, not the `rank` column: half the CPU for a word in 15% of 100,000 files
        ranked = (f"SELECT fts.rowid, bm25(fts, {weights}) AS score FROM fts{join} WHERE fts MATCH ?{where} "
                  f"ORDER BY score LIMIT ?")
        matched = "all"
        rows = con.execute(ranked, [compiled.all_terms, *params, limit]).fetchall()
        if not rows and compiled.any_terms:
            matched = "any"
            rows = con.execute(ranked, [compiled.any_terms, *params, limit]).fetchall()
        expr = compiled.all_terms if matched == "all" else compiled.any_terms
        hits = []
        for rowid, rank in rows:
            path, kind, status, day = con.execute(
                "SELECT path, kind, status, date FROM items WHERE id = ?", [rowid]).fetchone()
            snip = con.execute("SELECT snippet(fts, -1, '[', ']', '…', 12) FROM fts WHERE fts MATCH ? AND rowid = ?",
                               [expr, rowid]).fetchone()
            hits.append(Hit(path, kind, status, day, -float(rank), (snip[0] if snip else "") or ""))
        return SearchResult(hits, matched, indexed)
    finally:
        con.close()


def matching_paths(warehouse: str | Path, query: str) -> list[str] | None:
    """Every path whose text matches all the words of `query` (the same query language as `search`), unranked
    and unlimited; None when there is no index, or it is older than the warehouse (the caller falls back to a
    plain scan rather than answer from stale data). For `enrich browse`'s search box."""
    path = index_path(warehouse)
    if not path.is_file() or not is_fresh(warehouse):
        return None
    compiled = compile_query(query)
    if compiled.all_terms is None:
        return None
    con = _open(path)
    try:
        return [r[0] for r in con.execute(
            "SELECT i.path FROM fts JOIN items i ON i.id = fts.rowid WHERE fts MATCH ?", [compiled.all_terms])]
    finally:
        con.close()
