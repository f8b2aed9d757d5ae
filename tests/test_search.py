"""`enrich search`: ranked full-text search (SQLite FTS5) over a labelled warehouse, filters, hostile queries,
an index kept fresh after runs and compaction and replaced atomically."""
from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from enrich.cli import main as cli
from enrich.warehouse import search_index as si
from enrich.warehouse.store import Warehouse

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
LIB = "/photos"

# path -> row columns; the labelled set: each query below names the file it must find in its top 3
LABELLED = {
    f"{LIB}/2023/IMG_0001.jpg": dict(kind="image", caption="A red bicycle leaning on a brick wall",
                                     description="An old red bicycle with a wicker basket parked against a brick wall.",
                                     tags=["bicycle", "red", "wall"], taken_at=datetime(2023, 7, 1, 10, 0)),
    f"{LIB}/2023/IMG_0002.jpg": dict(kind="image", caption="A red car in the rain",
                                     description="A small red car parked on a wet street at night.",
                                     tags=["car", "red", "rain"], taken_at=datetime(2023, 7, 2, 21, 0)),
    f"{LIB}/2023/IMG_0003.jpg": dict(kind="image", caption="A bicycle shop window",
                                     description="Wheels and helmets displayed in a shop window; a sign reads OPEN.",
                                     tags=["shop", "window"], visible_text="OPEN", taken_at=datetime(2023, 8, 5, 9, 0)),
    f"{LIB}/2024/IMG_0104.jpg": dict(kind="image", caption="Café terrace in Montréal",
                                     description="People drinking coffee on a sunny terrace in Old Montréal.",
                                     tags=["café", "terrace", "city"], taken_at=datetime(2024, 5, 20, 15, 0)),
    f"{LIB}/2024/IMG_0105.jpg": dict(kind="image", caption="Sailboats in a harbour at sunset",
                                     description="Three sailboats moored in a calm harbour while the sun sets.",
                                     tags=["sailboat", "harbour", "sunset"], taken_at=datetime(2024, 6, 1, 20, 0)),
    f"{LIB}/2024/IMG_0106.jpg": dict(kind="image", caption="Emergency exit sign",
                                     description="A green sign above a door in a corridor.",
                                     tags=["sign", "door"], visible_text="EXIT — SORTIE", taken_at=datetime(2024, 6, 2, 8, 0)),
    f"{LIB}/2024/dog_beach.jpg": dict(kind="image", caption="A dog running on the beach",
                                      description="A black dog runs along the waterline of a sandy beach.",
                                      tags=["dog", "beach", "sea"], taken_at=datetime(2024, 7, 14, 11, 0)),
    f"{LIB}/2024/dog_park.jpg": dict(kind="image", caption="A dog in a park",
                                     description="A small white dog sits on the grass in a city park.",
                                     tags=["dog", "park", "grass"], taken_at=datetime(2024, 7, 15, 11, 0)),
    f"{LIB}/audio/meeting.m4a": dict(kind="audio", summary="Weekly team meeting about the budget for next quarter.",
                                     transcript="Okay, let's start with the budget. Marketing asked for more money.",
                                     sounds=["speech", "keyboard"], mtime=datetime(2024, 3, 3, 12, 0, tzinfo=timezone.utc)),
    f"{LIB}/docs/invoice.pdf": dict(kind="document", title="Invoice 2023-114 from Acme Plumbing",
                                    summary="An invoice for repairing a leaking kitchen pipe.",
                                    entities=["Acme Plumbing", "Jane Doe"], document_type="invoice",
                                    mtime=datetime(2023, 9, 9, 12, 0, tzinfo=timezone.utc)),
    f"{LIB}/video/fireworks.mp4": dict(kind="video", summary="Fireworks over a river on New Year's Eve.",
                                       scenes=["crowd on a bridge", "fireworks bursting"],
                                       mtime=datetime(2024, 1, 1, 0, 5, tzinfo=timezone.utc)),
    f"{LIB}/2024/broken_file.jpg": dict(kind="image", status="error", error_kind="corrupt", error="truncated JPEG"),
}
QUERIES = [
    ("red bicycle", "IMG_0001.jpg"),
    ("bicycles", "IMG_0001.jpg"),             # English stemming
    ("wicker baskets", "IMG_0001.jpg"),
    ("cafe montreal", "IMG_0104.jpg"),        # accents and case folded
    ("MONTRÉAL coffee", "IMG_0104.jpg"),
    ("sailboat sunset", "IMG_0105.jpg"),
    ("exit", "IMG_0106.jpg"),                  # visible text
    ("sortie", "IMG_0106.jpg"),
    ("budget meeting", "meeting.m4a"),        # audio summary and transcript
    ("acme invoice", "invoice.pdf"),           # document title and entities
    ("plumbing", "invoice.pdf"),
    ("fireworks bridge", "fireworks.mp4"),     # video scenes
    ("dog beach", "dog_beach.jpg"),
    ('"red car"', "IMG_0002.jpg"),
    ("runs dogs", "dog_beach.jpg"),
    ("audio meeting", "meeting.m4a"),          # folder and file names
]


def write_labelled(wh, rows=LABELLED, run="r1", seq=1, minutes=0):
    out = []
    for path, cols in rows.items():
        row = {"run_id": run, "path": path, "status": "ok", "content_hash": "h-" + path, "mime": None,
               "finished_at": T0 + timedelta(minutes=minutes), "mtime": T0}
        row.update(cols)
        out.append(row)
    Warehouse(wh).write_results(out, run, seq)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    wh = tmp_path_factory.mktemp("search") / "wh"
    write_labelled(wh)
    # the index exists before any test runs: tests of one module may run in any order, on any xdist worker,
    # and a query with nothing to search for ("***") builds nothing
    assert cli(["search", "--warehouse", str(wh), "red"]) == 0
    return wh


def search(wh, *args, capsys) -> tuple[int, str, str]:
    code = cli(["search", "--warehouse", str(wh), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def paths(wh, *args, capsys) -> list[str]:
    code, out, err = search(wh, *args, "--format", "paths", capsys=capsys)
    assert code == 0, err
    return [os.path.basename(p) for p in out.splitlines()]


@pytest.mark.parametrize("query,expected", QUERIES)
def test_expected_file_is_in_the_top_three(warehouse, query, expected, capsys):
    assert expected in paths(warehouse, query, capsys=capsys)[:3]


def test_best_match_ranks_first_and_json_output(warehouse, capsys):
    code, out, _ = search(warehouse, "red bicycle", "--format", "json", capsys=capsys)
    hits = json.loads(out)
    assert code == 0 and hits[0]["path"].endswith("IMG_0001.jpg")
    assert hits[0]["kind"] == "image" and hits[0]["date"].startswith("2023-07-01") and "[" in hits[0]["snippet"]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    code, out, _ = search(warehouse, "red bicycle", capsys=capsys)
    assert "IMG_0001.jpg" in out and "score" in out


def test_all_words_first_then_any(warehouse, capsys):
    # no file has both words: files with either are listed, and the table says so
    assert set(paths(warehouse, "sailboat plumbing", capsys=capsys)) == {"IMG_0105.jpg", "invoice.pdf"}
    code, out, _ = search(warehouse, "sailboat plumbing", capsys=capsys)
    assert "no file matched every word" in out
    assert paths(warehouse, "dog -beach", capsys=capsys) == ["dog_park.jpg"]
    assert set(paths(warehouse, "sailboat OR plumbing", capsys=capsys)) == {"IMG_0105.jpg", "invoice.pdf"}
    assert "IMG_0001.jpg" in paths(warehouse, "bicyc*", capsys=capsys)
    assert "IMG_0104.jpg" in paths(warehouse, "montr*", capsys=capsys)


def test_filters(warehouse, capsys):
    assert paths(warehouse, "dog", "--kind", "audio", capsys=capsys) == []
    assert paths(warehouse, "budget", "--kind", "audio", capsys=capsys) == ["meeting.m4a"]
    # taken_at, else the file date (mtime)
    assert set(paths(warehouse, "red", "--since", "2023-07-02", capsys=capsys)) == {"IMG_0002.jpg"}
    assert set(paths(warehouse, "red", "--until", "2023-07-01", capsys=capsys)) == {"IMG_0001.jpg"}
    assert paths(warehouse, "invoice", "--since", "2023-09-01", "--until", "2023-09-30", capsys=capsys) == ["invoice.pdf"]
    assert paths(warehouse, "invoice", "--since", "2023-09-10", capsys=capsys) == []
    assert set(paths(warehouse, "dog", "--path", f"{LIB}/2024/dog_b*", capsys=capsys)) == {"dog_beach.jpg"}
    assert set(paths(warehouse, "red", "--path", "*/2023/*", capsys=capsys)) == {"IMG_0001.jpg", "IMG_0002.jpg"}
    assert paths(warehouse, "broken", "--status", "error", capsys=capsys) == ["broken_file.jpg"]
    assert paths(warehouse, "bicycle", "--status", "error", capsys=capsys) == []
    assert len(paths(warehouse, "dog OR red OR bicycle", "--limit", "2", capsys=capsys)) == 2
    code, _, err = search(warehouse, "dog", "--since", "last tuesday", capsys=capsys)
    assert code == 2 and "not a date" in err


HOSTILE = ['"', '""', '"unclosed phrase', "'; DROP TABLE docs; --", 'x" OR 1=1 --', "NEAR(red bicycle, 2)",
           "caption:red", "red AND", "OR", "NOT dog", "-", "***", "(((", "a\x00b", "^red", "{caption}: red",
           "red\" NOT \"bicycle", "\\", "🚲", "%", "_", "' OR '1'='1", "rank:bm25", "fts MATCH 'x'"]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_crash_or_reach_sql(warehouse, query, capsys):
    code, out, err = search(warehouse, query, capsys=capsys)
    assert code in (0, 2), err
    assert "Traceback" not in err and "syntax error" not in err
    if code == 2:
        assert "nothing to search for" in err
    con = sqlite3.connect(si.index_path(warehouse))
    try:
        assert con.execute("SELECT count(*) FROM items").fetchone()[0] == len(LABELLED)
    finally:
        con.close()


def test_quotes_and_sql_are_searched_as_words(warehouse, capsys):
    assert paths(warehouse, '"red car', capsys=capsys)[0] == "IMG_0002.jpg"
    # no file has every word, so files with any are listed: the ones with "red"
    assert set(paths(warehouse, "red'; DROP TABLE items; --", capsys=capsys)) == {"IMG_0001.jpg", "IMG_0002.jpg"}
    assert paths(warehouse, "caption:bicycle", capsys=capsys) == []  # read as the phrase "caption bicycle"
    assert paths(warehouse, "bicycle;", capsys=capsys)[0] == "IMG_0001.jpg"


def test_missing_or_empty_warehouse_gives_a_clear_message(tmp_path, capsys):
    code, _, err = search(tmp_path / "nowhere", "dog", capsys=capsys)
    assert code == 2 and "no warehouse" in err
    (tmp_path / "empty" / "results").mkdir(parents=True)
    code, _, err = search(tmp_path / "empty", "dog", capsys=capsys)
    assert code == 2 and "no descriptions to search yet" in err


def test_index_follows_new_parts_and_compaction_and_is_replaced_atomically(tmp_path, capsys):
    wh = tmp_path / "wh"
    write_labelled(wh)
    assert paths(wh, "zebra", capsys=capsys) == []
    old = si._open(si.index_path(wh))  # a reader holding the old index
    # a later run re-describes one file and adds another
    write_labelled(wh, {f"{LIB}/2023/IMG_0001.jpg": dict(kind="image", caption="A zebra crossing"),
                        f"{LIB}/new/zebra2.jpg": dict(kind="image", caption="Two zebras grazing")},
                   run="r2", seq=1, minutes=5)
    assert not si.is_fresh(wh)
    assert set(paths(wh, "zebra", capsys=capsys)) == {"zebra2.jpg", "IMG_0001.jpg"}
    assert "IMG_0001.jpg" not in paths(wh, "wicker basket", capsys=capsys)  # the old description is gone
    # the reader that had the old index open still reads all of it, consistently
    assert old.execute("SELECT count(*) FROM items").fetchone()[0] == len(LABELLED)
    assert old.execute("SELECT count(*) FROM fts WHERE fts MATCH 'wicker'").fetchone()[0] == 1
    old.close()
    assert not list(si.index_path(wh).parent.glob("*.tmp"))
    # compaction renames the parts: the index is rebuilt by `enrich compact`, with the same answers
    assert cli(["compact", "--warehouse", str(wh), "--target-rows", "1000"]) == 0
    assert "search index" in capsys.readouterr().out
    assert si.is_fresh(wh)
    assert set(paths(wh, "zebra", capsys=capsys)) == {"zebra2.jpg", "IMG_0001.jpg"}


def test_a_run_refreshes_the_index_at_its_end(tmp_path, gemini, enrich_home, capsys):
    from enrich.flows.pipeline import close_run, discover_files, open_run, process_chunk
    from enrich.settings import load_settings
    from tests.support.photos import make_photos

    lib = tmp_path / "lib"
    settings = load_settings().with_overrides(rpm=0, tpm=0, progress="off")
    wh = settings.warehouse

    def run(n: int) -> None:
        make_photos(lib, n, prefix=f"r{n}_", start=100 * n)
        ctx = open_run([str(lib)], settings)
        try:
            process_chunk(ctx.run_id, list(discover_files(ctx)))
        finally:
            close_run(ctx)

    run(1)
    assert not si.index_path(wh).exists()  # nobody searched yet: the run built no index
    code, _, err = search(wh, "anything", capsys=capsys)  # the first search builds it
    assert code == 0 and "search index built: 1 items" in err and si.stored_meta(wh)["rows"] == "1"
    run(2)
    assert si.is_fresh(wh)  # refreshed by close_run, before any search
    assert si.stored_meta(wh)["rows"] == "3"
    # what the (emulated) model wrote is searchable: the longest word of each caption finds its photo
    from enrich.warehouse.views import read_snapshot

    rows = read_snapshot(wh, lambda con: con.execute("SELECT path, caption FROM items").fetchall())
    for path, caption in rows:
        word = max(caption.replace(".", " ").replace(",", " ").split(), key=len)
        assert os.path.basename(path) in paths(wh, word, "--limit", "3", capsys=capsys), (word, caption)


def test_search_and_export_never_import_prefect_or_the_sdk(warehouse, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; from enrich.cli import main\n"
        f"assert main(['search', 'red bicycle', '--warehouse', {str(warehouse)!r}, '--format', 'paths']) == 0\n"
        f"assert main(['export', 'xmp', '--dry-run', '--warehouse', {str(warehouse)!r}]) == 0\n"
        "bad = [m for m in ('prefect', 'google.genai', 'mlx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"{LIB}/2023/IMG_0001.jpg"
    assert "missing 8" in proc.stdout  # the labelled photos do not exist on disk: nothing is written
