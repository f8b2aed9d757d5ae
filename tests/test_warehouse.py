from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from enrich.warehouse.store import Warehouse
from enrich.warehouse.views import connect

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def row(path, run_id, status="ok", minutes=0, cost="0.000070", **extra):
    r = {"run_id": run_id, "path": path, "status": status, "content_hash": "h" + path, "kind": "image",
         "model": "gemini-3.1-flash-lite", "input_tokens": 280, "output_tokens": 40,
         "cost_usd": Decimal(cost), "finished_at": T0 + timedelta(minutes=minutes)}
    r.update(extra)
    return r


def test_empty_warehouse_still_answers_queries(tmp_path):
    con = connect(tmp_path / "nothing-here")
    assert con.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert "cost_usd" in [d[0] for d in con.execute("SELECT * FROM items").description]


def test_items_view_keeps_the_latest_outcome_per_path(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write_results([row("/a.jpg", "r1", "error", 0), row("/b.jpg", "r1", "ok", 0)], "r1", 1)
    wh.write_results([row("/a.jpg", "r2", "ok", 5, caption="a dog")], "r2", 1)
    con = connect(tmp_path)
    got = con.execute("SELECT path, status, run_id, caption FROM items ORDER BY path").fetchall()
    assert got == [("/a.jpg", "ok", "r2", "a dog"), ("/b.jpg", "ok", "r1", None)]
    assert con.execute("SELECT count(*) FROM results").fetchone() == (3,)


@pytest.mark.parametrize("unfinished", ["interrupted", "over_budget"])
def test_an_unfinished_reprocess_does_not_hide_the_earlier_description(tmp_path, unfinished):
    wh = Warehouse(tmp_path)
    wh.write_results([row("/a.jpg", "r1", "ok", 0, caption="a dog"), row("/b.jpg", "r1", "ok", 0, caption="a cat"),
                      row("/c.jpg", "r1", "ok", 0, caption="old bytes"), row("/d.jpg", "r1", "error", 0)], "r1", 1)
    wh.write_results([row("/a.jpg", "r2", unfinished, 5),  # same bytes: the dog stays in view
                      row("/b.jpg", "r2", "error", 5),  # a real outcome of the reprocess: it is the latest
                      row("/c.jpg", "r2", unfinished, 5, content_hash="new"),  # other bytes: no old caption
                      row("/d.jpg", "r2", unfinished, 5)], "r2", 1)  # nothing better before it: shown as is
    con = connect(tmp_path)
    got = con.execute("SELECT path, status, run_id, caption FROM items ORDER BY path").fetchall()
    assert got == [("/a.jpg", "ok", "r1", "a dog"), ("/b.jpg", "error", "r2", None),
                   ("/c.jpg", unfinished, "r2", None), ("/d.jpg", "error", "r1", None)]
    # `latest` (what the next run plans from) still says what happened last.
    assert con.execute("SELECT status FROM latest WHERE path = '/a.jpg'").fetchone() == (unfinished,)


def test_runs_view_keeps_the_latest_snapshot(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write_run({"run_id": "r1", "seq": 1, "status": "running", "items": 0})
    wh.write_run({"run_id": "r1", "seq": 2, "status": "finished", "items": 7, "spent_usd": Decimal("0.01")})
    assert connect(tmp_path).execute("SELECT status, items, spent_usd FROM runs").fetchall() == [
        ("finished", 7, Decimal("0.010000000000"))]


def test_publishing_leaves_no_temp_files_and_parts_are_whole(tmp_path):
    wh = Warehouse(tmp_path)
    path = wh.write_results([row("/a.jpg", "r1")], "r1", 1)
    assert path.parent.name == "results" and path.exists()
    assert list(wh.tmp_dir.iterdir()) == []
    assert pq.read_table(path).num_rows == 1


def test_a_failed_write_leaves_nothing_visible(tmp_path):
    wh = Warehouse(tmp_path)
    with pytest.raises(Exception):
        wh.write_results([{"run_id": "r1", "path": None, "status": "ok"}], "r1", 1)  # path is not nullable
    assert wh.result_files() == [] and list(wh.tmp_dir.iterdir()) == []


def test_temp_files_are_never_read(tmp_path):
    wh = Warehouse(tmp_path)
    wh.write_results([row("/a.jpg", "r1")], "r1", 1)
    wh.tmp_dir.mkdir(exist_ok=True)
    (wh.tmp_dir / "part-x.parquet.123.tmp").write_bytes(b"PAR1 half a file")
    assert connect(tmp_path).execute("SELECT count(*) FROM items").fetchone() == (1,)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    caption=st.none() | text,
    tags=st.none() | st.lists(text, max_size=5),
    tokens=st.integers(0, 2**40),
    cost=st.decimals(min_value=0, max_value=10**6, places=12, allow_nan=False),
    lat=st.none() | st.floats(-90, 90),
)
def test_values_round_trip_through_parquet_and_duckdb(tmp_path_factory, caption, tags, tokens, cost, lat):
    root = tmp_path_factory.mktemp("wh")
    Warehouse(root).write_results(
        [row("/x.jpg", "r", caption=caption, tags=tags, input_tokens=tokens, cost_usd=cost, gps_lat=lat)], "r", 1)
    got = connect(root).execute("SELECT caption, tags, input_tokens, cost_usd, gps_lat FROM items").fetchone()
    assert got == (caption, tags, tokens, cost, lat)
