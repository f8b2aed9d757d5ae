"""`enrich browse` and `enrich report` in a real headless Chromium (Debian's package, driven over the DevTools
protocol): the sample library described once through the real pipeline against the emulator, one server and
one browser for the whole module. Screenshots are kept as test artefacts (the path is printed at the end)."""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.chromium import Chromium, find_chromium

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "library"
HOSTILE = ('<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'"> '
           'a dog & a "quoted" caption')
HOSTILE_TAG = "<u>tag</u>"


# -- fixtures: one warehouse, one server, one browser ----------------------------------------------------------

@pytest.fixture(scope="module")
def library(emulator, tmp_path_factory):
    """ENRICH_HOME with the sample library described once (real pipeline, real SDK, the emulator), plus one
    row whose caption is hostile HTML, written the way the pipeline writes rows."""
    from PIL import Image

    from enrich.emulator import Faults
    from enrich.flows.pipeline import close_run, discover_files, open_run, process_chunk
    from enrich.settings import load_settings
    from enrich.tasks.records import mtime_of
    from enrich.warehouse.store import Warehouse

    home = tmp_path_factory.mktemp("browse-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENRICH_HOME", str(home))
        mp.delenv("ENRICH_WAREHOUSE", raising=False)
        emulator.reset()
        emulator.set_config(faults=Faults(), latency_ms=(0, 0), rpm_limit=None)
        mp.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
        mp.setenv("GEMINI_API_KEY", "test-key-123")
        settings = load_settings().with_overrides(rpm=0, tpm=0, progress="off")
        ctx = open_run([str(SAMPLES)], settings)
        try:
            stats = process_chunk(ctx.run_id, list(discover_files(ctx)))
        finally:
            close_run(ctx)
    assert stats.by_status.get("ok", 0) >= 10
    hostile = home / "inbox" / "hostile.png"
    hostile.parent.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(hostile)
    st = hostile.stat()
    Warehouse(home / "warehouse").write_results([{
        "run_id": ctx.run_id, "path": str(hostile), "kind": "image", "mime": "image/png", "status": "ok",
        "content_hash": hashlib.sha256(hostile.read_bytes()).hexdigest(), "size_bytes": st.st_size,
        "mtime": mtime_of(st.st_mtime_ns), "caption": HOSTILE, "description": HOSTILE, "tags": [HOSTILE_TAG],
    }], ctx.run_id, 999)
    return {"home": home, "warehouse": home / "warehouse", "run_id": ctx.run_id, "hostile": str(hostile)}


@pytest.fixture(scope="module")
def items(library):
    from enrich.warehouse.views import read_snapshot

    return read_snapshot(library["warehouse"],
                         lambda con: con.sql("SELECT * FROM items").to_arrow_table().to_pylist())


@pytest.fixture(scope="module")
def server(library):
    from enrich.web.app import bind, create_app, make_server

    sock = bind(0)
    port = sock.getsockname()[1]
    token = "test-token-" + os.urandom(8).hex()
    app = create_app(library["warehouse"], token=token, thumbs_dir=library["home"] / "thumbs")
    srv = make_server(app)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    yield {"base": f"http://127.0.0.1:{port}", "port": port, "token": token}
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def cli(library, tmp_path_factory):
    """The commands as a user runs them, in one fresh process (one start-up for both): `enrich report`, then
    `enrich browse --no-open`, which keeps serving; at exit the process says whether Prefect was imported."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('prefect imported' if 'prefect' in sys.modules else 'no prefect',"
            " file=sys.stderr, flush=True))\n"
            "from enrich.cli import main\n"
            f"assert main(['report', '--out', {str(out)!r}, '--warehouse', {str(library['warehouse'])!r}]) == 0\n"
            "sys.stdout.flush()\n"
            f"main(['browse', '--no-open', '--warehouse', {str(library['warehouse'])!r}])\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "ENRICH_HOME": str(library["home"])})
    report_line, url_line = proc.stdout.readline(), proc.stdout.readline()
    yield {"proc": proc, "report": out, "report_line": report_line, "url_line": url_line}
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory, request):
    folder = Path(os.environ.get("ENRICH_TEST_ARTEFACTS") or tmp_path_factory.mktemp("browse-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    shots = sorted(p.name for p in folder.glob("*.png"))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter and shots:
        reporter.write_line(f"\nbrowse screenshots: {folder} ({', '.join(shots)})")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium: `apt-get install chromium` (.ci/run installs it)")
    b = Chromium(exe, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def get(server, path: str, *, token: bool | str = False, cookie: bool = False, host: str | None = None):
    """A raw GET (http.client sends the path exactly as given: no normalisation of `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
    if token:
        path += ("&" if "?" in path else "?") + "token=" + (token if isinstance(token, str) else server["token"])
    headers = {"Host": host or f"127.0.0.1:{server['port']}"}
    if cookie:
        headers["Cookie"] = f"enrich_token={server['token']}"
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


TILES_JS = """Array.from(document.querySelectorAll('article.tile')).map(t => {
  const img = t.querySelector('img');
  return {path: t.dataset.path, caption: t.querySelector('.caption').textContent,
          tags: Array.from(t.querySelectorAll('.tags li')).map(li => li.textContent),
          img: img ? {loaded: img.complete && img.naturalWidth > 0, src: img.getAttribute('src')} : null};
})"""
IMAGES_DONE_JS = "Array.from(document.images).every(i => i.complete)"


def _by_path(tiles):
    return {t["path"]: t for t in tiles}


# -- in the browser ---------------------------------------------------------------------------------------------

def test_gallery_of_the_sample_library_shows_thumbnails_and_captions(browser, server, items, artefacts):
    browser.goto(f"{server['base']}/?token={server['token']}")
    assert browser.wait_for(IMAGES_DONE_JS)
    tiles = _by_path(browser.evaluate(TILES_JS))
    assert set(tiles) == {r["path"] for r in items}, "every current item has a tile"
    photos = [r for r in items if r["kind"] == "image" and r["status"] == "ok"]
    assert len(photos) >= 7  # jpg, webp, heic, gif, png and the hostile png
    for row in photos:
        tile = tiles[row["path"]]
        assert tile["caption"] == row["caption"]
        assert tile["tags"] == row["tags"][:8]
        assert tile["img"] and tile["img"]["loaded"], f"thumbnail of {row['path']} did not load: {tile['img']}"
    beach = tiles[str(SAMPLES / "2025-summer" / "beach.jpg")]
    assert beach["caption"].startswith("A ") and beach["img"]["src"].startswith("/thumb/")
    shot = browser.screenshot(artefacts / "gallery.png")
    assert shot.stat().st_size > 10_000


def test_thumbnails_are_cached_by_content_hash_under_enrich_home(library, items, server):
    beach = next(r for r in items if r["path"].endswith("beach.jpg"))
    status, headers, body = get(server, f"/thumb/{beach['content_hash']}.jpg", cookie=True)
    assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    from enrich.web.thumbs import SIZES

    cached = library["home"] / "thumbs" / beach["content_hash"][:2] / f"{beach['content_hash']}-{SIZES['thumb']}.jpg"
    assert cached.read_bytes() == body
    assert not list(cached.parent.glob(".tmp-*")), "no temp file left behind"


def test_a_search_finds_the_expected_photo_and_its_item_page_opens(browser, server, items, artefacts):
    sunset = next(r for r in items if r["path"].endswith("sunset.jpg"))
    assert "orange" in sunset["caption"]
    assert sum("orange" in (r["caption"] or "") for r in items) == 1
    browser.goto(f"{server['base']}/?token={server['token']}")
    browser.navigate_by("document.querySelector('input[name=q]').value = 'Orange'; "
                        "document.querySelector('form.search').submit()")
    assert browser.evaluate("location.search").startswith("?q=Orange")
    assert browser.wait_for(IMAGES_DONE_JS)
    tiles = browser.evaluate(TILES_JS)
    assert [t["path"] for t in tiles] == [sunset["path"]]
    assert tiles[0]["img"]["loaded"]
    assert browser.evaluate("document.querySelector('#summary').textContent").strip().startswith("1 item")
    browser.screenshot(artefacts / "search.png")

    browser.navigate_by("document.querySelector('article.tile a.thumb').click()")
    assert browser.evaluate("location.pathname").startswith("/item/")
    assert browser.evaluate("document.querySelector('h1').textContent") == "sunset.jpg"
    fields = dict(browser.evaluate(
        "Array.from(document.querySelectorAll('table.fields tr')).map(r => [r.cells[0].textContent, r.cells[1].textContent])"))
    for name in ("caption", "description", "tags", "objects", "model", "enrichment_version", "input_tokens",
                 "output_tokens", "cost_usd", "path", "content_hash", "run_id", "width", "height"):
        assert name in fields, f"item page lacks {name}"
    assert fields["caption"] == sunset["caption"] and fields["path"] == sunset["path"]
    assert fields["model"] == sunset["model"] and fields["tags"] == ", ".join(sunset["tags"])
    assert fields["cost_usd"] == f"${sunset['cost_usd'].normalize():f}"
    assert fields["input_tokens"] == f"{sunset['input_tokens']:,}"
    assert browser.wait_for("(i => i && i.complete && i.naturalWidth > 0)(document.querySelector('.media img'))")
    browser.screenshot(artefacts / "item.png")


def test_an_error_item_shows_its_kind_and_reason(browser, server, items):
    broken = next(r for r in items if r["path"].endswith("cut-off-download.jpg"))
    assert broken["status"] == "error" and broken["error"]
    browser.goto(f"{server['base']}/?status=error&token={server['token']}")
    assert {t["path"] for t in browser.evaluate(TILES_JS)} == {r["path"] for r in items if r["status"] == "error"}
    browser.navigate_by(f"document.querySelector('article[data-path$=\"cut-off-download.jpg\"] a').click()")
    fields = dict(browser.evaluate(
        "Array.from(document.querySelectorAll('table.fields tr')).map(r => [r.cells[0].textContent, r.cells[1].textContent])"))
    assert fields["status"] == "error" and fields["error_kind"] == broken["error_kind"]
    assert fields["error"] == broken["error"]


def test_an_audio_item_has_a_player_that_plays_the_recorded_file(browser, server, items):
    memo = next(r for r in items if r["kind"] == "audio")
    browser.goto(f"{server['base']}/?kind=audio&token={server['token']}")
    browser.navigate_by("document.querySelector('article.tile a').click()")
    src = browser.evaluate("document.querySelector('audio[controls]').getAttribute('src')")
    assert src.startswith("/media/")
    browser.evaluate("(a => { a.preload = 'metadata'; a.load(); })(document.querySelector('audio'))")
    assert browser.wait_for("document.querySelector('audio').readyState >= 1", timeout=15), "the player loads it"
    assert abs(browser.evaluate("document.querySelector('audio').duration") - memo["duration_s"]) < 0.1
    status, headers, body = get(server, src, cookie=True)
    assert status == 200 and body == Path(memo["path"]).read_bytes()
    assert headers["content-type"].startswith("audio/")


def test_a_caption_containing_script_renders_as_text(browser, server, library, artefacts):
    for url in (f"{server['base']}/?q=hostile&token={server['token']}",):
        browser.goto(url)
        tiles = browser.evaluate(TILES_JS)
        assert [t["path"] for t in tiles] == [library["hostile"]]
        assert tiles[0]["caption"] == HOSTILE, "the caption is shown exactly, as text"
        assert tiles[0]["tags"] == [HOSTILE_TAG]
        assert browser.evaluate("document.querySelectorAll('script, u, img[onerror], img[src=x]').length") == 0
        assert browser.evaluate("document.title") != "pwned"
    browser.navigate_by("document.querySelector('article.tile a').click()")
    assert browser.evaluate("document.querySelectorAll('script, u, img[onerror]').length") == 0
    assert HOSTILE in browser.evaluate("document.querySelector('table.fields').textContent")
    assert browser.evaluate("document.title") != "pwned"
    browser.screenshot(artefacts / "hostile-item.png")


def test_runs_page_draws_its_charts_as_inline_svg(browser, server, library):
    browser.goto(f"{server['base']}/runs?token={server['token']}")
    charts = browser.evaluate("Array.from(document.querySelectorAll('svg.chart')).map(s => "
                              "[s.getAttribute('aria-label'), s.querySelectorAll('rect.bar').length])")
    titles = [t for t, _ in charts]
    assert [t.split(" (")[0] for t in titles] == ["Spend per run", "Spend per day", "Items by status", "Tokens by kind"]
    assert all(bars > 0 for _, bars in charts)
    assert library["run_id"] in browser.evaluate("document.querySelector('#runs').textContent")


def test_the_report_opens_offline_and_shows_its_charts(browser, library, cli, artefacts):
    out = cli["report"]
    assert library["run_id"] in cli["report_line"] and str(out) in cli["report_line"], cli["report_line"]
    assert not list(out.parent.glob(".report.html.*")), "written through a temp file, nothing left behind"
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html), "nothing is fetched from anywhere"
    browser.goto(out.as_uri())
    assert browser.wait_for(IMAGES_DONE_JS)
    assert browser.evaluate("document.querySelectorAll('svg.chart').length") == 4
    assert browser.evaluate("document.querySelectorAll('svg.chart rect.bar').length") >= 4
    imgs = browser.evaluate("Array.from(document.images).map(i => [i.getAttribute('src').slice(0, 23), "
                            "i.complete && i.naturalWidth > 0])")
    assert len(imgs) >= 7 and all(src == "data:image/jpeg;base64," and ok for src, ok in imgs)
    assert browser.evaluate("document.querySelectorAll('script, u, img[onerror]').length") == 0
    assert HOSTILE in browser.evaluate("document.body.textContent")
    assert "truncated" in browser.evaluate("document.querySelector('#problems').textContent")
    browser.screenshot(artefacts / "report.png")


# -- over plain HTTP -------------------------------------------------------------------------------------------

def test_requests_without_the_token_get_403(server, items):
    digest = next(r["content_hash"] for r in items if r["kind"] == "image" and r["status"] == "ok")
    for path in ("/", "/runs", f"/thumb/{digest}.jpg", "/static/style.css", "/nope"):
        assert get(server, path)[0] == 403, path
        assert get(server, path, token="wrong-token")[0] == 403, path
    status, headers, body = get(server, "/", token=True)
    assert status == 200 and b'id="gallery"' in body
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert "script-src 'none'" in headers["content-security-policy"]
    assert get(server, "/runs", cookie=True)[0] == 200
    # DNS rebinding: the right token, but a Host that is not this machine
    assert get(server, "/", token=True, host=f"evil.example:{server['port']}")[0] == 403
    assert get(server, "/", cookie=True, host="attacker.test")[0] == 403


def test_path_traversal_and_unrecorded_files_get_404(server, items):
    audio = next(r for r in items if r["kind"] == "audio")
    photo = next(r for r in items if r["kind"] == "image" and r["status"] == "ok")
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() if Path("/etc/passwd").exists() else "0" * 64
    photo_id = hashlib.md5(photo["path"].encode()).hexdigest()[:16]  # item ids are md5(path)[:16]
    for path in ("/thumb/..%2F..%2F..%2F..%2Fetc%2Fpasswd.jpg", "/thumb/../../../../etc/passwd",
                 "/thumb/%2Fetc%2Fpasswd.jpg", "/preview/..%2F..%2Fetc%2Fpasswd.jpg",
                 "/media/..%2F..%2F..%2Fetc%2Fpasswd", "/media/%2Fetc%2Fpasswd", "/item/..%2F..%2Fetc%2Fpasswd",
                 "/static/..%2Fapp.py", "/static/../app.py",
                 f"/thumb/{passwd}.jpg",  # a well-formed hash the warehouse never recorded
                 f"/thumb/{audio['content_hash']}.jpg",  # recorded, but not an image
                 f"/media/{photo_id}",  # recorded, but not audio or video
                 "/media/" + "0" * 16):
        status, _, body = get(server, path, cookie=True)
        assert status == 404, (path, status)
        assert b"root:" not in body


def test_enrich_browse_prints_a_tokened_127_0_0_1_url_and_neither_command_imports_prefect(cli):
    proc = cli["proc"]
    try:
        m = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{20,})", cli["url_line"])
        assert m, cli["url_line"]
        srv = {"port": int(m.group(1)), "token": m.group(2)}
        assert get(srv, "/", token=True)[0] == 200
        assert get(srv, "/")[0] == 403
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the normal way to stop it
        _, err = proc.communicate(timeout=30)
    assert "no prefect" in err, err
    assert proc.returncode == 0 and "error" not in err, err


# -- the snapshot ----------------------------------------------------------------------------------------------

def test_the_snapshot_shows_exactly_what_the_items_view_shows_and_follows_new_parts(tmp_path):
    from decimal import Decimal

    from enrich.warehouse.store import Warehouse
    from enrich.warehouse.views import read_snapshot
    from enrich.web.library import Filters, Library

    wh = Warehouse(tmp_path)
    t = [datetime_utc(2026, 1, d) for d in (1, 2, 3)]
    wh.write_results([
        {"run_id": "r1", "path": "/a.jpg", "content_hash": "h1", "status": "ok", "caption": "first", "finished_at": t[0]},
        {"run_id": "r1", "path": "/b.jpg", "content_hash": "h2", "status": "ok", "caption": "moved", "finished_at": t[0]},
        {"run_id": "r1", "path": "/c.jpg", "content_hash": "h3", "status": "ok", "caption": "old bytes", "finished_at": t[0]},
    ], "r1", 1)
    wh.write_results([
        # an interrupted reprocess of the same bytes does not hide the description
        {"run_id": "r2", "path": "/a.jpg", "content_hash": "h1", "status": "interrupted", "finished_at": t[1]},
        {"run_id": "r2", "path": "/b.jpg", "content_hash": "h2", "status": "gone", "error_kind": "moved", "finished_at": t[1]},
        # new bytes not described yet: the old description is not of this file any more
        {"run_id": "r2", "path": "/c.jpg", "content_hash": "h4", "status": "over_budget", "finished_at": t[1]},
        {"run_id": "r2", "path": "/d.jpg", "content_hash": "h5", "status": "ok", "caption": "new",
         "cost_usd": Decimal("0.001"), "finished_at": t[1]},
    ], "r2", 1)
    expected = sorted(read_snapshot(tmp_path, lambda con: con.sql(
        "SELECT path, run_id, status, caption FROM items").fetchall()))
    library = Library(tmp_path, refresh_s=0)
    shown = sorted((r["path"], r["run_id"], r["status"], r["caption"])
                   for r in library.snapshot().gallery(Filters()).items)
    assert shown == expected
    assert [p for p, *_ in shown] == ["/a.jpg", "/c.jpg", "/d.jpg"]

    # keyset paging walks every item exactly once, in gallery order
    walked, page = [], library.snapshot().gallery(Filters(), limit=1)
    while True:
        walked += [r["path"] for r in page.items]
        if page.next_cursor is None:
            break
        assert page.total == 3
        page = library.snapshot().gallery(Filters(), after=page.next_cursor, limit=1)
    assert walked == ["/c.jpg", "/d.jpg", "/a.jpg"]  # newest first (finished_at when nothing else is known), then by path

    wh.write_results([{"run_id": "r3", "path": "/e.jpg", "content_hash": "h6", "status": "ok", "caption": "later",
                       "finished_at": t[2]}], "r3", 1)
    old = library.snapshot()  # sees the new part, starts a rebuild in the background, serves the old snapshot
    assert old.count == 3
    library.wait_idle()
    assert library.snapshot().count == 4 and library.last_error is None
    assert [r["path"] for r in library.snapshot().gallery(Filters(q="LATER")).items] == ["/e.jpg"]


def test_the_search_box_uses_the_full_text_index_when_it_is_up_to_date(tmp_path):
    """Stemmed, accent-folded matching from `enrich search`'s index; a stale or missing index falls back to
    plain word matching (which finds no stem), never to stale answers."""
    from enrich.warehouse import search_index
    from enrich.warehouse.store import Warehouse
    from enrich.web.library import Filters, Library

    wh = Warehouse(tmp_path)
    t = datetime_utc(2026, 1, 1)
    wh.write_results([
        {"run_id": "r1", "path": "/x/bike.jpg", "content_hash": "h1", "status": "ok", "kind": "image",
         "caption": "Two bicycles by the café", "finished_at": t},
        {"run_id": "r1", "path": "/x/boat.jpg", "content_hash": "h2", "status": "ok", "kind": "image",
         "caption": "A boat", "finished_at": t},
    ], "r1", 1)

    def found(q: str) -> list[str]:
        return [r["path"] for r in Library(tmp_path, refresh_s=0).snapshot().gallery(Filters(q=q)).items]

    assert found("bicycling") == [] and found("cafe") == []  # no index: plain words, no stemming or folding
    search_index.build(tmp_path)
    assert found("bicycling") == ["/x/bike.jpg"] and found("cafe") == ["/x/bike.jpg"]
    assert found("bicycle -cafe") == []
    wh.write_results([{"run_id": "r2", "path": "/x/bike2.jpg", "content_hash": "h3", "status": "ok",
                       "kind": "image", "caption": "a bicycle", "finished_at": t}], "r2", 1)
    assert found("bicycle") == ["/x/bike.jpg", "/x/bike2.jpg"] and found("bicycling") == []  # stale index: plain


def datetime_utc(y: int, m: int, d: int):
    from datetime import datetime, timezone

    return datetime(y, m, d, tzinfo=timezone.utc)


def test_profiles_become_a_filter_once_the_warehouse_has_more_than_one(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from starlette.testclient import TestClient

    from enrich.schemas.parquet import RESULT_SCHEMA
    from enrich.web.app import create_app
    from enrich.web.library import Filters, Snapshot

    plain = pa.Table.from_pylist([{"run_id": "r1", "path": "/a.jpg", "status": "ok", "caption": "no profile"}],
                                 schema=RESULT_SCHEMA)
    assert not Snapshot(tmp_path).has_profile
    (tmp_path / "results").mkdir()
    pq.write_table(plain, tmp_path / "results" / "part-r1-000001.parquet")
    assert not Snapshot(tmp_path).has_profile
    rows = [{"run_id": "r2", "path": p, "status": "ok", "caption": c, "profile": prof}
            for p, c, prof in (("/w.pdf", "invoice", "work"), ("/h.jpg", "holiday", "family"))]
    with_profile = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    pq.write_table(with_profile, tmp_path / "results" / "part-r2-000001.parquet")
    snap = Snapshot(tmp_path)
    assert snap.has_profile and snap.profiles == ["detailed", "family", "work"]  # rows without one: detailed
    assert [r["path"] for r in snap.gallery(Filters(profile="work")).items] == ["/w.pdf"]
    client = TestClient(create_app(tmp_path, token="t", thumbs_dir=tmp_path / "thumbs"), base_url="http://127.0.0.1")
    page = client.get("/", params={"token": "t", "profile": "family"})
    assert page.status_code == 200 and '<select name="profile">' in page.text
    assert "holiday" in page.text and "invoice" not in page.text and "no profile" not in page.text
