"""DuckDB views over the warehouse's Parquet parts. Read-only: importing this never imports Prefect.

Views:
    results  every outcome row ever written (one per item, profile and run); rows written before profiles
             existed read as profile `detailed`
    latest   the latest row per (file path, profile), including paths marked `gone` (moved away or deleted)
    current  the current outcome per (file path, profile) that still exists (latest without `gone`); a later
             row that records no outcome (`interrupted`, `over_budget`) does not hide an earlier outcome for
             the same bytes, so an interrupted reprocess never makes a committed description vanish from view
    items    `current` for the default profile (the `profile` setting), every column
    profile_<name>  `current` for one profile: the file's identity, outcome and cost, and the profile's
             fields as typed columns (those kept in fields_json extracted with DuckDB's JSON functions); one
             per built-in profile and per profile a run recorded in the warehouse (profiles/<name>.json)
    runs     the latest snapshot per run
    evals    evaluation scores (`enrich eval`): one row per item per configuration (schemas/evals.py)
    eval_summary  one row per evaluation and configuration: items, rates and means of the scores, spend
    runs     the latest snapshot per run; `spent_usd` is the larger of the snapshot's and the run's spend
             ledger (warehouse/ledger.py), so a run that died before committing what it paid for shows it
    ledger   billed requests of runs whose spend the rows do not show (run_id, billed_at, cost_usd)
    jobs     the latest snapshot per batch job (warehouse/jobs.py): name, display name, model, keys, items,
             reserved and spent USD, state, reason, times
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, TypeVar

import duckdb
import pyarrow as pa

from enrich.schemas.evals import EVAL_SCHEMA
from enrich.schemas.parquet import JOB_SCHEMA, RESULT_SCHEMA, RUN_SCHEMA, transient_sql, unread_sql
from enrich.warehouse.evals import score_files
from enrich.warehouse.jobs import JobStore
from enrich.warehouse.ledger import read_ledgers
from enrich.warehouse.location import open_warehouse
from enrich.warehouse.store import Warehouse, quarantine_unreadable


def literal_path(path: Path | str) -> str:
    """`path` as a DuckDB file-list entry that names exactly that file. DuckDB expands `*`, `?` and `[...]` in
    every path it is given, even in a list, so a warehouse under `Photos [2024]` would read `Photos 2`'s parts:
    each glob character is put in a one-character class (`[[]`, `[*]`, `[?]`), which matches only itself."""
    text = str(path)
    if any(c in text for c in "*?["):
        text = "".join(f"[{c}]" if c in "*?[" else c for c in text)
    return "'" + text.replace("'", "''") + "'"


def _source_sql(con: duckdb.DuckDBPyConnection, files: list[Path], schema: pa.Schema, empty_name: str) -> str:
    # An empty relation with every current column, first: queries run on an empty warehouse, parts written
    # before a column was added read as null there instead of failing, and `SELECT *` has the schema's
    # column order whichever parts exist (a union by name orders columns by its first input).
    con.register(empty_name, schema.empty_table())
    if not files:
        return f"SELECT * FROM {empty_name}"
    listed = ", ".join(literal_path(f) for f in files)
    return f"SELECT * FROM {empty_name} UNION ALL BY NAME SELECT * FROM read_parquet([{listed}], union_by_name = true)"


# What each profile_<name> view shows besides the profile's own fields.
PROFILE_VIEW_COLUMNS = ["path", "content_hash", "kind", "status", "error_kind", "error", "model",
                        "enrichment_version", "input_tokens", "output_tokens", "thinking_tokens", "cost_usd",
                        "reused_from", "run_id", "finished_at"]


def _profile_fields(wh: Warehouse) -> dict[str, dict[str, dict]]:
    """name -> {field: {type, column}}: the built-ins, then what runs recorded (the latest record wins)."""
    from enrich.schemas.profiles import BUILTIN_SCHEMAS, Profile

    out = {name: Profile(name=name, schemas=schemas, prompts={}).describe()["fields"]
           for name, schemas in BUILTIN_SCHEMAS.items()}
    for name, doc in wh.profile_docs().items():
        if isinstance(doc.get("fields"), dict):
            out[name] = doc["fields"]
    return out


def _field_sql(name: str, spec: dict) -> str | None:
    ident = '"' + name.replace('"', '""') + '"'
    typ = str(spec.get("type", ""))
    if not typ.replace("[]", "").isalpha():
        return None
    if spec.get("column"):
        col = '"' + str(spec["column"]).replace('"', '""') + '"'
        return f"CAST({col} AS {typ}) AS {ident}"
    path = "'$." + name.replace("'", "''") + "'"
    if typ == "VARCHAR":
        return f"json_extract_string(fields_json, {path}) AS {ident}"
    return f"TRY_CAST(json_extract(fields_json, {path}) AS {typ}) AS {ident}"


def default_profile() -> str:
    """The `profile` setting (the items view's profile)."""
    from enrich.settings import load_settings

    return load_settings().profile


def connect(warehouse_dir: str | Path, con: duckdb.DuckDBPyConnection | None = None, *,
            profile: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views over a snapshot of the committed parts. `items` shows
    `profile` (default: the `profile` setting).

    The file list is taken once: files published later are not seen by this connection, and temp files
    (in .tmp/) are never listed, so a reader never sees a partial file.
    """
    from enrich.schemas.profiles import DETAILED, view_name

    wh = open_warehouse(warehouse_dir)
    con = con or duckdb.connect(":memory:")
    # Every view below is bound against the parts' footers; parts are immutable (published once by rename,
    # never rewritten), so they are read once per connection, not once per view (the profile_<name> views
    # would otherwise double the cost of a connection).
    con.execute("SET parquet_metadata_cache = true")
    if wh.remote:  # object storage: one Delta table version each (warehouse/object_store.py), same views
        source, runs_source = wh.register_sources(con, '_empty_results', '_empty_runs')
    else:
        source = _source_sql(con, wh.result_files(), RESULT_SCHEMA, '_empty_results')
        runs_source = _source_sql(con, wh.run_files(), RUN_SCHEMA, '_empty_runs')
    con.execute(f"CREATE OR REPLACE VIEW results AS SELECT * REPLACE (coalesce(profile, '{DETAILED}') AS profile) "
                f"FROM ({source})")
    con.execute(f"CREATE OR REPLACE VIEW runs_all AS {runs_source}")
    con.execute(
        """
        CREATE OR REPLACE VIEW latest AS
        SELECT * EXCLUDE (_rank) FROM (
            SELECT *, row_number() OVER (
                PARTITION BY path, profile ORDER BY finished_at DESC NULLS LAST, run_id DESC) AS _rank
            FROM results)
        WHERE _rank = 1
        """
    )
    # Among the rows for the path's current bytes, outcomes rank before "never attempted" rows, then newest
    # first. Rows for older bytes come last: their description is not of this file any more. The current bytes
    # are those of the newest row that read the file: a transient read error (no hash) does not say.
    con.execute(
        f"""
        CREATE OR REPLACE VIEW current AS
        SELECT * EXCLUDE (_current, _pick) FROM (
            SELECT *, row_number() OVER (
                PARTITION BY path, profile ORDER BY content_hash IS NOT DISTINCT FROM _current DESC,
                                           {transient_sql()},
                                           finished_at DESC NULLS LAST, run_id DESC) AS _pick
            FROM (SELECT *, first_value(content_hash) OVER (
                      PARTITION BY path, profile ORDER BY {unread_sql()}, finished_at DESC NULLS LAST, run_id DESC)
                      AS _current
                  FROM results))
        WHERE _pick = 1 AND status <> 'gone'
        """
    )
    chosen = (profile or default_profile()).replace("'", "''")
    con.execute(f"CREATE OR REPLACE VIEW items AS SELECT * FROM current WHERE profile = '{chosen}'")
    for name, fields in _profile_fields(wh).items():
        cols = [c for c in (_field_sql(f, spec) for f, spec in fields.items() if isinstance(spec, dict)) if c]
        quoted = name.replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW {view_name(name)} AS SELECT {', '.join(PROFILE_VIEW_COLUMNS + cols)} "
                    f"FROM current WHERE profile = '{quoted}'")
    con.register("_ledger", read_ledgers(wh.root))
    con.execute("CREATE OR REPLACE VIEW ledger AS SELECT * FROM _ledger")
    # A run's spend: its snapshot (committed rows) or its ledger (billed requests), whichever is larger; they
    # only differ for a run whose billed requests never committed (killed, or a part that could not be written).
    con.execute(
        """
        CREATE OR REPLACE VIEW runs AS
        SELECT * EXCLUDE (_rank, _billed) REPLACE (
            CAST(CASE WHEN _billed > coalesce(spent_usd, 0) THEN _billed ELSE spent_usd END AS DECIMAL(22, 12))
            AS spent_usd) FROM (
            SELECT r.*, row_number() OVER (PARTITION BY r.run_id ORDER BY r.seq DESC) AS _rank, l._billed
            FROM runs_all r LEFT JOIN (SELECT run_id, sum(cost_usd) AS _billed FROM _ledger GROUP BY run_id) l
            ON l.run_id = r.run_id)
        WHERE _rank = 1
        """
    )
    evals = [] if wh.remote else score_files(warehouse_dir)  # evaluations: folder warehouses only, for now
    con.execute(f"CREATE OR REPLACE VIEW evals AS {_source_sql(con, evals, EVAL_SCHEMA, '_empty_evals')}")
    con.execute(f"CREATE OR REPLACE VIEW eval_summary AS {EVAL_SUMMARY_SQL}")
    jobs = _source_sql(con, [] if wh.remote else JobStore(wh).job_files(), JOB_SCHEMA, '_empty_jobs')
    con.execute(
        f"""
        CREATE OR REPLACE VIEW jobs AS
        SELECT * EXCLUDE (_rank) FROM (
            SELECT *, row_number() OVER (PARTITION BY job_id ORDER BY seq DESC) AS _rank FROM ({jobs}))
        WHERE _rank = 1
        """
    )
    return con


# Means skip unscored (null) values; booleans count as 1/0.
EVAL_SUMMARY_SQL = """
SELECT eval_id, config_label, config, any_value(model) AS model, any_value(resolution) AS resolution,
       any_value(set_name) AS set_name, min(started_at) AS started_at, count(*) AS items,
       count(*) FILTER (WHERE status = 'ok') AS ok,
       avg(schema_valid::INT) AS schema_valid,
       avg(object_recall) AS object_recall, avg(object_precision) AS object_precision,
       avg(people_count_ok::INT) AS people_count_ok, avg(setting_ok::INT) AS setting_ok,
       avg(text_cer) AS text_cer, avg(transcript_wer) AS transcript_wer,
       avg(title_ok::INT) AS title_ok, avg(date_recall) AS date_recall,
       count(*) FILTER (WHERE len(boilerplate) > 0) AS boilerplate_items,
       count(*) FILTER (WHERE refusal) AS refusals,
       count(*) FILTER (WHERE canary IS NOT NULL) AS canaries,
       count(*) FILTER (WHERE injection_followed) AS injections_followed,
       avg(judge_score) AS judge_score,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd, sum(cost_usd) / count(*) AS cost_per_item_usd,
       sum(judge_cost_usd) AS judge_cost_usd,
       median(latency_ms) AS latency_median_ms
FROM evals GROUP BY eval_id, config_label, config
"""


T = TypeVar("T")


def _vanished(exc: duckdb.Error) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.IOException) and ("No files found" in text or "No such file" in text)


def read_snapshot(warehouse_dir: str | Path, fn: Callable[[duckdb.DuckDBPyConnection], T],
                  patience_s: float = 60.0) -> T:
    """Run `fn(con)` on a fresh snapshot; if a compaction deleted a part this snapshot listed, take a new
    snapshot and run it again (the merged part holds the same rows).

    One compaction publishes many merged parts and deletes what each replaces, so on a busy machine a slow
    reader can lose several snapshots in a row: it keeps trying for `patience_s`, not for a fixed count."""
    deadline = time.monotonic() + patience_s
    attempt = 0
    while True:
        attempt += 1
        con = None
        try:
            con = connect(warehouse_dir)  # creating the views reads the parts' schemas already
            return fn(con)
        except duckdb.Error as exc:
            if time.monotonic() >= deadline:
                raise
            if not _vanished(exc):
                # a part that passed the cheap check but cannot be read (a damaged footer or page): quarantine
                # it and read again; any other error (bad SQL) is the caller's
                wh = open_warehouse(warehouse_dir)
                if wh.remote:
                    raise
                if not quarantine_unreadable(wh.result_files() + wh.run_files()):
                    raise
        finally:
            if con is not None:
                con.close()
        time.sleep(min(0.05 * attempt, 0.5))
