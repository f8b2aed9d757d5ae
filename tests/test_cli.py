"""The `enrich` command as a user runs it: subprocesses, exit codes, output formats."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media_factory import make_jpeg

ROOT = Path(__file__).resolve().parent.parent


def enrich(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enrich", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_help_documents_every_command():
    from enrich.cli import COMMANDS

    out = enrich("--help").stdout
    for name in COMMANDS:
        assert name in out
    for name in COMMANDS:
        sub = enrich(name, "--help")
        assert sub.returncode == 0 and "usage: enrich " + name in sub.stdout


def test_query_never_imports_prefect_or_the_sdk(tmp_path):
    code = (
        "import sys, io, contextlib; from enrich.cli import main\n"
        f"rc = main(['query', 'SELECT count(*) AS n FROM items', '--warehouse', {str(tmp_path)!r}, '--format', 'json'])\n"
        "bad = [m for m in ('prefect', 'google.genai', 'mlx') if m in sys.modules]\n"
        "assert rc == 0 and not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip()) == [{"n": 0}]


def test_query_formats(tmp_path):
    from decimal import Decimal

    from enrich.warehouse.store import Warehouse

    Warehouse(tmp_path).write_results(
        [{"run_id": "r", "path": "/a.jpg", "status": "ok", "cost_usd": Decimal("0.00007"), "tags": ["x", "y"]}], "r", 1)
    sql = "SELECT path, status, cost_usd, tags FROM items"
    as_json = json.loads(enrich("query", sql, "--warehouse", str(tmp_path), "--format", "json").stdout)
    assert as_json == [{"path": "/a.jpg", "status": "ok", "cost_usd": 0.00007, "tags": ["x", "y"]}]
    as_csv = enrich("query", sql, "--warehouse", str(tmp_path), "--format", "csv").stdout.splitlines()
    assert as_csv[0] == "path,status,cost_usd,tags" and as_csv[1].startswith("/a.jpg,ok,")
    table = enrich("query", sql, "--warehouse", str(tmp_path)).stdout
    assert "/a.jpg" in table and "(1 row)" in table


def test_warehouse_location_comes_from_the_environment(tmp_path):
    from enrich.warehouse.store import Warehouse

    Warehouse(tmp_path / "wh").write_results([{"run_id": "r", "path": "/a.jpg", "status": "ok"}], "r", 1)
    out = enrich("query", "SELECT count(*) AS n FROM items", "--format", "json",
                 env={"ENRICH_WAREHOUSE": str(tmp_path / "wh")}).stdout
    assert json.loads(out) == [{"n": 1}]


def test_bad_sql_is_a_one_line_error(tmp_path):
    proc = enrich("query", "SELEC nonsense", "--warehouse", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("enrich: error: query failed") and proc.stderr.count("\n") == 1


@pytest.fixture
def one_photo(tmp_path) -> Path:
    (tmp_path / "lib").mkdir()
    make_jpeg(tmp_path / "lib" / "a.jpg")
    return tmp_path / "lib"


def test_a_bad_key_stops_the_run_before_it_starts_without_showing_the_key(one_photo, gemini, tmp_path):
    secret = "invalid-AIzaTOPSECRET-key"
    proc = enrich("run", str(one_photo), env={"GEMINI_API_KEY": secret, "ENRICH_HOME": str(tmp_path / "h")})
    assert proc.returncode == 2
    assert proc.stderr.startswith("enrich: error:") and "API key" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "TOPSECRET" not in proc.stdout + proc.stderr
    assert gemini.stats()["billed_requests"] == 0


def test_an_unreachable_endpoint_stops_the_run_before_it_starts(one_photo, tmp_path):
    proc = enrich("run", str(one_photo), env={"GEMINI_API_KEY": "k", "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9",
                                              "ENRICH_HOME": str(tmp_path / "h")})
    assert proc.returncode == 2 and "cannot reach" in proc.stderr and proc.stderr.count("\n") == 1


def test_an_unknown_model_stops_the_run_before_it_starts(one_photo, gemini, tmp_path):
    proc = enrich("run", str(one_photo), "--model", "gpt-9", env={"ENRICH_HOME": str(tmp_path / "h")})
    assert proc.returncode == 2 and "no price for model" in proc.stderr


def test_no_key_and_no_emulator_is_refused_with_advice(one_photo, tmp_path):
    proc = enrich("run", str(one_photo), env={"ENRICH_HOME": str(tmp_path / "h")})
    assert proc.returncode == 2 and "--emulator" in proc.stderr


def test_missing_path_is_refused(tmp_path):
    proc = enrich("run", str(tmp_path / "nope"), "--emulator")
    assert proc.returncode == 2 and "path not found" in proc.stderr


def test_run_with_the_emulator_end_to_end_prints_a_summary(one_photo, tmp_path):
    proc = enrich("run", str(one_photo), "--emulator", "--json", env={"ENRICH_HOME": str(tmp_path / "h")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["status"] == "finished" and summary["by_status"] == {"ok": 1}
    assert float(summary["spent_usd"]) > 0
    assert "Traceback" not in proc.stderr
