"""Choosing what is sent (--kinds, --include/--exclude, .enrichignore, hidden files, --max-file-size), trial runs
(--sample/--seed, --limit) and context without leaks (--context), on files the tests build, through the real
discovery, the real flow and the emulator."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from enrich.tasks.discover import discover
from enrich.tasks.selection import Selection, trial_pick
from enrich.warehouse.views import connect
from tests.media_factory import make_jpeg, make_wav
from tests.support.flows import run_enrich_flow

GPS = (38.722252, -9.139337)  # Lisbon
KEYWORD_XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
    b' exif:GPSLatitude="38,43.3351N" exif:GPSLongitude="9,8.3602W">'
    b'<dc:subject><rdf:Bag><rdf:li>tram 28</rdf:li><rdf:li>azulejos</rdf:li></rdf:Bag></dc:subject>'
    b'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Grandma&apos;s birthday trip</rdf:li></rdf:Alt>'
    b'</dc:description></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


def rel_paths(root: Path, selection: Selection | None = None) -> list[str]:
    return sorted(os.path.relpath(r.path, root) for r in discover([root], workers=1, selection=selection))


def tiny(path: Path, shade: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_jpeg(path, size=(24, 16), color=(shade, 120, 200), exif_gps=False, xmp=False, icc=False)


# -- filters and .enrichignore (discovery) ---------------------------------------------------------------------
def test_include_and_exclude_globs_match_the_path_relative_to_the_root(tmp_path):
    for name in ("a.jpg", "b.png", "2024/trip/c.jpg", "2024/raw/d.jpg", "2023/e.jpg", "raw/f.jpg"):
        tiny(tmp_path / name)
    assert rel_paths(tmp_path, Selection(include=("2024/**/*.jpg",))) == ["2024/raw/d.jpg", "2024/trip/c.jpg"]
    assert rel_paths(tmp_path, Selection(include=("*.jpg",), exclude=("raw/", "/a.jpg"))) == [
        "2023/e.jpg", "2024/trip/c.jpg"]  # `raw/` is a folder at any depth, `/a.jpg` only beside the root
    assert rel_paths(tmp_path, Selection(exclude=("2024/**",))) == ["2023/e.jpg", "a.jpg", "b.png", "raw/f.jpg"]


def test_enrichignore_files_nest_negate_and_name_folders(tmp_path):
    for name in ("a.jpg", "b.png", "keep.png", "tmp/x.jpg", "album/c.png", "album/d.jpg", "album/best.png",
                 "album/sub/e.png", "album/sub/f.jpg", "private/g.jpg", "private/inner/h.jpg"):
        tiny(tmp_path / name)
    (tmp_path / ".enrichignore").write_text("# top rules\n*.png\n!keep.png\ntmp/\n")
    (tmp_path / "album" / ".enrichignore").write_text("!best.png\n/d.jpg\n")  # deeper rules win
    (tmp_path / "album" / "sub" / ".enrichignore").write_text("*.jpg\n!e.png\n")
    (tmp_path / "private" / ".enrichignore").write_text("# nothing but comments: the whole folder is left out\n")
    assert rel_paths(tmp_path) == ["a.jpg", "album/best.png", "album/sub/e.png", "keep.png"]


def test_hidden_files_and_folders_are_left_out_unless_asked(tmp_path):
    for name in ("a.jpg", ".secret.jpg", ".cache/b.jpg", "album/.c.jpg", "album/d.jpg"):
        tiny(tmp_path / name)
    assert rel_paths(tmp_path, Selection(hidden=False)) == ["a.jpg", "album/d.jpg"]
    assert rel_paths(tmp_path, Selection(hidden=True)) == [".cache/b.jpg", ".secret.jpg", "a.jpg", "album/.c.jpg",
                                                           "album/d.jpg"]


def test_max_file_size_and_kinds_leave_files_out_without_a_row(tmp_path):
    tiny(tmp_path / "small.jpg")
    make_jpeg(tmp_path / "big.jpg", size=(800, 600), exif_gps=False)
    make_wav(tmp_path / "voice.wav", 1)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all, just text")
    (tmp_path / "broken.wav").write_bytes(b"not a wav at all, just text")
    (tmp_path / "notes.xyz").write_bytes(b"\x00\x01\x02 binary")
    limit = (tmp_path / "big.jpg").stat().st_size - 1
    assert "big.jpg" not in rel_paths(tmp_path, Selection(max_file_size=limit))
    assert "small.jpg" in rel_paths(tmp_path, Selection(max_file_size=limit))
    rows = {os.path.relpath(r.path, tmp_path): r for r in discover([tmp_path], selection=Selection(
        kinds=frozenset({"image"})))}
    # a file named as an image that is not one keeps its error row; other kinds and non-media get none
    assert sorted(rows) == ["big.jpg", "broken.jpg", "small.jpg"]
    assert (rows["broken.jpg"].status, rows["broken.jpg"].error_kind) == ("error", "mislabelled")
    assert sorted(os.path.relpath(r.path, tmp_path) for r in discover([tmp_path], selection=Selection(
        kinds=frozenset({"audio"})))) == ["broken.wav", "voice.wav"]


def test_a_sample_is_reproducible_and_a_limit_takes_the_walk_order():
    paths = [f"/lib/{i:03d}.jpg" for i in range(200)]
    pick = lambda seed, items=paths: list(trial_pick(items, str, roots=["/lib"], sample=10, seed=seed))
    first = pick(17)
    assert len(first) == 10 and first == pick(17) and first == sorted(first)  # walk order kept
    assert pick(18) != first
    # stable when files are added elsewhere: each file's draw depends on the seed and its own path only
    grown = sorted(paths + [f"/lib/new/{i}.jpg" for i in range(50)])
    assert set(pick(17, grown)) - set(first) <= {p for p in grown if p.startswith("/lib/new/")}
    assert list(trial_pick(iter(paths), str, roots=["/lib"], limit=3)) == paths[:3]


# -- the flow -------------------------------------------------------------------------------------------------
def run_flow(roots, **settings):
    return run_enrich_flow(roots, settings)


def items(home: Path, warehouse: str = "warehouse") -> dict[str, tuple]:
    con = connect(home / warehouse)
    return {Path(p).name: (s, k) for p, s, k in con.execute("SELECT path, status, error_kind FROM latest").fetchall()}


@pytest.mark.usefixtures("prefect_harness")
def test_a_sample_describes_n_files_the_same_n_again_and_a_full_run_the_rest(tmp_path, gemini, enrich_home):
    root = tmp_path / "lib"
    for i in range(8):
        tiny(root / f"{i}.jpg", shade=20 + 25 * i)
    (root / "notes.txt").write_bytes(b"\x00\x01 not media")
    first = run_flow([root], sample=3, sample_seed=5)
    assert first["status"] == "finished" and first["items"] == 3 and gemini.stats()["billed_requests"] == 3
    sampled = items(enrich_home)
    assert len(sampled) == 3 and all(v == ("ok", None) for v in sampled.values())

    again = run_flow([root], sample=3, sample_seed=5, warehouse=str(enrich_home / "other"))
    assert again["items"] == 3 and set(items(enrich_home, "other")) == set(sampled)

    gemini.reset()
    full = run_flow([root])
    assert full["unchanged"] == 3 and gemini.stats()["billed_requests"] == 5
    rows = items(enrich_home)
    assert len(rows) == 9 and not any(s == "gone" for s, _ in rows.values())
    limited = run_flow([root], limit=2, warehouse=str(enrich_home / "third"))
    assert sorted(items(enrich_home, "third")) == ["0.jpg", "1.jpg"] and limited["items"] == 2


@pytest.mark.usefixtures("prefect_harness")
def test_a_described_file_left_out_by_a_filter_is_not_marked_gone(tmp_path, gemini, enrich_home):
    root = tmp_path / "lib"
    for name in ("a.jpg", "raw/b.jpg", "c.jpg"):
        tiny(root / name, shade=len(name) * 30)
    run_flow([root])
    (root / ".enrichignore").write_text("c.jpg\n")
    (root / "a.jpg").unlink()
    second = run_flow([root], exclude="raw/")
    rows = items(enrich_home)
    assert rows["b.jpg"] == ("ok", None) and rows["c.jpg"] == ("ok", None)  # left out: their rows stand
    assert rows["a.jpg"] == ("gone", "removed")  # really gone
    assert second["items"] == 1


@pytest.mark.usefixtures("prefect_harness")
def test_context_sends_a_place_name_and_never_the_coordinates(tmp_path, gemini, enrich_home):
    from enrich.settings import load_settings
    from enrich.tasks.incremental import current_versions

    folder = tmp_path / "Lisbon weekend"
    folder.mkdir()
    photo = make_jpeg(folder / "tram.jpg", size=(64, 48), exif_gps=GPS, xmp=False)
    with Image.open(photo) as img:  # add the keywords and caption (and GPS again) as XMP
        img.save(photo, "JPEG", exif=img.info["exif"], xmp=KEYWORD_XMP)
    summary = run_flow([folder], context="place,date,folder,keywords")
    assert summary["status"] == "finished" and summary["by_status"] == {"ok": 1}
    (body,) = gemini.received_requests()
    text = json.loads(body)["contents"][0]["parts"][-1]["text"]
    for expected in ("Lisbon", "PT", "2023-07-14 15:30", "folder: Lisbon weekend", "tram 28", "azulejos",
                     "Grandma's birthday trip"):
        assert expected in text, (expected, text)
    raw = body.decode()
    for digits in ("38.72", "38,43", "43.33", "-9.13", "9.139", "9,8.36", "8.36"):
        assert digits not in raw, digits  # no coordinate, in any notation, anywhere in the request
    (_, image), = gemini.received_media()
    assert b"Exif" not in image and b"xmpmeta" not in image  # the bytes stay stripped

    plain = load_settings()
    with_context = plain.with_overrides(context="keywords,date")
    assert current_versions(plain)("image") != current_versions(with_context)("image")
    assert current_versions(with_context)("image") == current_versions(
        plain.with_overrides(context="date, keywords"))("image")  # order and spaces do not matter


def test_estimate_takes_the_same_options(tmp_path, enrich_home):
    from enrich.cli import main

    for i in range(5):
        tiny(tmp_path / f"{i}.jpg", shade=30 * i)
    tiny(tmp_path / "skip" / "x.jpg")
    make_wav(tmp_path / "a.wav", 1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["estimate", str(tmp_path), "--json", "--kinds", "image", "--exclude", "skip/", "--sample", "2",
                   "--seed", "3"])
    assert rc == 0
    est = json.loads(out.getvalue())
    assert {k: v["items"] for k, v in est["by_kind"].items()} == {"image": 2}
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(["estimate", str(tmp_path), "--kinds", "photos"]) == 2
    assert "photos" in err.getvalue()


def test_keywords_come_from_xmp_sidecars_and_iptc_but_not_from_what_enrich_wrote(tmp_path):
    import hashlib

    from enrich.tasks.context import read_keywords

    photo = tiny(tmp_path / "IMG_0001.jpg")
    ours = "sha256:" + hashlib.sha256("beach".encode()).hexdigest()[:32]
    (tmp_path / "IMG_0001.jpg.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:enrich="urn:enrich:xmp:1.0/">'
        '<dc:subject><rdf:Bag><rdf:li>grandma</rdf:li><rdf:li>beach</rdf:li></rdf:Bag></dc:subject>'
        f'<enrich:wrote><rdf:Bag><rdf:li>dc:subject {ours}</rdf:li></rdf:Bag></enrich:wrote>'
        '</rdf:Description></rdf:RDF></x:xmpmeta>')
    assert read_keywords(str(photo), "image") == (["grandma"], [])
