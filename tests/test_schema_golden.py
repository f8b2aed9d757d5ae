"""The Parquet schema is a contract with every reader (DuckDB, pandas, polars): pin it."""
import os
from pathlib import Path

from enrich.schemas.parquet import RESULT_SCHEMA, RUN_SCHEMA

GOLDEN = Path(__file__).parent / "golden"


def _check(name: str, schema) -> None:
    text = schema.to_string(show_schema_metadata=False) + "\n"
    path = GOLDEN / f"{name}.schema.txt"
    if os.environ.get("ENRICH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} schema changed: if deliberate, rerun with ENRICH_UPDATE_GOLDEN=1"


def test_results_schema_is_pinned():
    _check("results", RESULT_SCHEMA)


def test_runs_schema_is_pinned():
    _check("runs", RUN_SCHEMA)


def test_cost_is_an_exact_decimal_not_a_float():
    assert str(RESULT_SCHEMA.field("cost_usd").type) == "decimal128(22, 12)"


def test_evals_schema_is_pinned():
    from enrich.schemas.evals import EVAL_SCHEMA

    _check("evals", EVAL_SCHEMA)
    assert str(EVAL_SCHEMA.field("cost_usd").type) == "decimal128(22, 12)"
