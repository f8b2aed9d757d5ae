"""DuckDB views over the warehouse's Parquet parts. Read-only: importing this never imports Prefect.

Views:
    results  every outcome row ever written (one per item per run)
    items    the latest outcome per file path
    runs     the latest snapshot per run
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from schemas.parquet import RESULT_SCHEMA, RUN_SCHEMA
from warehouse.store import Warehouse


def _source_sql(con: duckdb.DuckDBPyConnection, files: list[Path], schema: pa.Schema, empty_name: str) -> str:
    if not files:
        # No parts yet: an empty relation with the right columns, so queries still run.
        con.register(empty_name, schema.empty_table())
        return f"SELECT * FROM {empty_name}"
    listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return f"SELECT * FROM read_parquet([{listed}], union_by_name = true)"


def connect(warehouse_dir: str | Path, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views over a snapshot of the committed parts.

    The file list is taken once: files published later are not seen by this connection, and temp files
    (in .tmp/) are never listed, so a reader never sees a partial file.
    """
    wh = Warehouse(warehouse_dir)
    con = con or duckdb.connect(":memory:")
    con.execute(f"CREATE OR REPLACE VIEW results AS {_source_sql(con, wh.result_files(), RESULT_SCHEMA, '_empty_results')}")
    con.execute(f"CREATE OR REPLACE VIEW runs_all AS {_source_sql(con, wh.run_files(), RUN_SCHEMA, '_empty_runs')}")
    con.execute(
        """
        CREATE OR REPLACE VIEW items AS
        SELECT * EXCLUDE (_rank) FROM (
            SELECT *, row_number() OVER (
                PARTITION BY path ORDER BY finished_at DESC NULLS LAST, run_id DESC) AS _rank
            FROM results)
        WHERE _rank = 1
        """
    )
    con.execute(
        """
        CREATE OR REPLACE VIEW runs AS
        SELECT * EXCLUDE (_rank) FROM (
            SELECT *, row_number() OVER (PARTITION BY run_id ORDER BY seq DESC) AS _rank FROM runs_all)
        WHERE _rank = 1
        """
    )
    return con
