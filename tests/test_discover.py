"""Discovery: every file ends in exactly one row; bad input becomes a row, never a crash."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import enrich.tasks.discover as discover_mod
from enrich.tasks.discover import DiscoveredFile, discover, hash_file, iter_batches
from enrich.tasks.sniff import EXTENSION_MIMES, sniff
from tests.media_factory import (
    make_gif,
    make_heic,
    make_jpeg,
    make_photo_library,
    make_png,
    make_png_bomb,
    make_symlink_loop,
    make_text_as_png,
    make_truncated_jpeg,
    make_webp,
    make_zero_byte,
)


def rows_by_rel(root: Path, **kwargs) -> dict[str, DiscoveredFile]:
    rows = list(discover([root], **kwargs))
    by_rel = {os.path.relpath(r.path, root).replace(os.sep, "/"): r for r in rows}
    assert len(by_rel) == len(rows), "a path was reported twice"
    return by_rel


def outcome(row: DiscoveredFile) -> str:
    if row.status == "pending":
        return "pending"
    if row.status == "skipped":
        return "skipped"
    return row.error_kind or "error"


# --------------------------------------------------------------------------------------------------
# sniff

ISO = lambda brand, compat=b"": (  # noqa: E731
    (16 + len(compat)).to_bytes(4, "big") + b"ftyp" + brand + b"\x00\x00\x00\x00" + compat
)


@pytest.mark.parametrize(
    ("head", "ext", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", ".jpg", ("image", "image/jpeg")),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ".png", ("image", "image/png")),
        (b"GIF87a\x01\x00", ".gif", ("image", "image/gif")),
        (b"GIF89a\x01\x00", ".gif", ("image", "image/gif")),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", ".webp", ("image", "image/webp")),
        (ISO(b"heic", b"mif1heic"), ".heic", ("image", "image/heic")),
        (ISO(b"heix"), ".heic", ("image", "image/heic")),
        (ISO(b"hevc"), ".heic", ("image", "image/heic")),
        (ISO(b"mif1", b"mif1heic"), ".heic", ("image", "image/heic")),
        (ISO(b"mif1", b"mif1"), ".heif", ("image", "image/heif")),
        (ISO(b"msf1"), ".heif", ("image", "image/heif")),
        (ISO(b"avif", b"mif1avif"), ".avif", ("image", "image/avif")),
        (ISO(b"mif1", b"avifmif1"), ".avif", ("image", "image/avif")),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", ".wav", ("audio", "audio/wav")),
        (b"ID3\x04\x00\x00\x00\x00", ".mp3", ("audio", "audio/mp3")),
        (b"\xff\xfb\x90\x64\x00", ".mp3", ("audio", "audio/mp3")),
        (b"\xff\xf3\x90\x64\x00", ".mp3", ("audio", "audio/mp3")),
        (b"fLaC\x00\x00\x00\x22", ".flac", ("audio", "audio/flac")),
        (b"OggS\x00\x02" + b"\x00" * 22 + b"OpusHead", ".opus", ("audio", "audio/ogg")),
        (ISO(b"M4A ", b"M4A mp42isom"), ".m4a", ("audio", "audio/mp4")),
        (ISO(b"M4B "), ".m4b", ("audio", "audio/mp4")),
        (ISO(b"isom", b"isomiso2"), ".m4a", ("audio", "audio/mp4")),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", ".aac", ("audio", "audio/aac")),
        (ISO(b"isom", b"isomiso2avc1mp41"), ".mp4", ("video", "video/mp4")),
        (ISO(b"mp42"), "", ("video", "video/mp4")),
        (ISO(b"qt  ", b"qt  "), ".mov", ("video", "video/quicktime")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", ".webm", ("video", "video/webm")),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", ".pdf", ("document", "application/pdf")),
        (b"hello world\n", ".txt", ("document", "text/plain")),
        (b"# Title\n\nbody", ".md", ("document", "text/markdown")),
        (b"# Title\n\nbody", ".markdown", ("document", "text/markdown")),
        (b"<p>hi</p>", ".html", ("document", "text/html")),
        (b"\xef\xbb\xbf  \n<!DOCTYPE HTML><html>", ".txt", ("document", "text/html")),
        (b"<HTML><body>", "", ("document", "text/html")),
    ],
)
def test_sniff_recognises_formats_by_magic_bytes(head, ext, expected):
    assert sniff(head, ext) == expected


def test_sniff_ignores_the_extension_for_binary_formats():
    assert sniff(b"\x89PNG\r\n\x1a\n\x00\x00", ".jpg") == ("image", "image/png")
    assert sniff(b"\xff\xd8\xff\xdb", ".txt") == ("image", "image/jpeg")


def test_sniff_accepts_utf8_text_cut_in_the_middle_of_a_character():
    text = ("Grüße aus Köln — 東京" * 10).encode()
    cut = text[: len(text) - 1]  # the last 3-byte character loses its final byte
    with pytest.raises(UnicodeDecodeError):
        cut.decode("utf-8")
    assert sniff(cut, ".txt") == ("document", "text/plain")


def test_sniff_rejects_binary_and_invalid_utf8_as_unknown():
    assert sniff(b"hello\x00world", ".txt") is None
    assert sniff(b"\x00\x00\x00\x01Bud1\x00", "") is None  # .DS_Store
    assert sniff(b"\xc3\x28 invalid utf-8 in the middle, then more text", ".json") is None
    assert sniff(b"", ".txt") is None
    assert sniff(b"RIFF\x00\x00\x00\x00AVI LIST", ".avi") is None


def test_sniff_accepts_legacy_8bit_text_only_under_a_text_name():
    latin1 = "café crème brûlée, déjà vu".encode("latin-1")
    assert sniff(latin1, ".txt") == ("document", "text/plain")
    assert sniff(latin1, ".bin") is None


def test_extension_mimes_cover_the_common_types():
    for ext, mime in {
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".png": "image/png",
        ".gif": "image/gif",
        ".webp": "image/webp",
        ".heic": "image/heic",
        ".heif": "image/heif",
        ".mp3": "audio/mp3",
        ".wav": "audio/wav",
        ".flac": "audio/flac",
        ".m4a": "audio/mp4",
        ".mp4": "video/mp4",
        ".mov": "video/quicktime",
        ".pdf": "application/pdf",
        ".txt": "text/plain",
        ".md": "text/markdown",
        ".html": "text/html",
    }.items():
        assert EXTENSION_MIMES[ext] == mime


@settings(max_examples=300, deadline=None)
@given(head=st.binary(max_size=256), ext=st.sampled_from(["", ".jpg", ".txt", ".md", ".m4a", ".html", ".xyz"]))
def test_sniff_never_raises_on_random_bytes(head, ext):
    result = sniff(head, ext)
    assert result is None or (result[0] in {"image", "audio", "video", "document"} and "/" in result[1])


@settings(max_examples=100, deadline=None)
@given(brand=st.binary(min_size=0, max_size=40), size=st.integers(0, 2**32 - 1))
def test_sniff_never_raises_on_odd_iso_boxes(brand, size):
    sniff(size.to_bytes(4, "big") + b"ftyp" + brand, ".mp4")


# --------------------------------------------------------------------------------------------------
# the photo library: one row per file, the expected outcome for each

DISCOVERY_OUTCOME = {"ok": "pending", "truncated": "pending", "too_large": "pending"}


def test_photo_library_yields_one_row_per_file_with_expected_outcome(tmp_path):
    expected = make_photo_library(tmp_path)
    rows = rows_by_rel(tmp_path)
    assert sorted(rows) == sorted(expected)
    for rel, want in expected.items():
        assert outcome(rows[rel]) == DISCOVERY_OUTCOME.get(want, want), (rel, rows[rel])


def test_pending_rows_carry_sniffed_kind_mime_hash_size_and_mtime(tmp_path):
    path = make_jpeg(tmp_path / "a.jpg")
    (row,) = discover([tmp_path])
    st_ = os.stat(path)
    assert row == DiscoveredFile(
        path=str(path),
        size=st_.st_size,
        mtime_ns=st_.st_mtime_ns,
        kind="image",
        mime="image/jpeg",
        content_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
        status="pending",
        error_kind=None,
        error=None,
    )


@pytest.mark.parametrize(
    ("maker", "name", "mime"),
    [
        (make_png, "x.png", "image/png"),
        (make_gif, "x.gif", "image/gif"),
        (make_webp, "x.webp", "image/webp"),
        (lambda p: make_heic(p, size=(64, 48)), "x.heic", "image/heic"),
    ],
)
def test_each_image_format_is_pending_with_its_mime(tmp_path, maker, name, mime):
    maker(tmp_path / name)
    (row,) = discover([tmp_path])
    assert (row.status, row.kind, row.mime) == ("pending", "image", mime)


def test_media_and_text_documents_are_pending_by_content(tmp_path):
    (tmp_path / "song.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 100)
    (tmp_path / "clip.mov").write_bytes(ISO(b"qt  ", b"qt  ") + b"\x00" * 100)
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n")
    (tmp_path / "notes.txt").write_text("shopping list\n- milk\n")
    (tmp_path / "README.md").write_text("# readme\n")
    (tmp_path / "page.html").write_text("<!doctype html><title>x</title>")
    rows = rows_by_rel(tmp_path)
    assert {k: (r.status, r.kind, r.mime) for k, r in rows.items()} == {
        "song.mp3": ("pending", "audio", "audio/mp3"),
        "clip.mov": ("pending", "video", "video/quicktime"),
        "paper.pdf": ("pending", "document", "application/pdf"),
        "notes.txt": ("pending", "document", "text/plain"),
        "README.md": ("pending", "document", "text/markdown"),
        "page.html": ("pending", "document", "text/html"),
    }


def test_root_may_be_a_single_file(tmp_path):
    path = make_jpeg(tmp_path / "only.jpg", size=(64, 48))
    rows = list(discover([path]))
    assert [(r.path, r.status, r.mime) for r in rows] == [(str(path), "pending", "image/jpeg")]


def test_path_is_absolute_as_walked_not_resolved(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    make_jpeg(real / "a.jpg", size=(32, 32))
    os.symlink(real, tmp_path / "alias")
    monkeypatch.chdir(tmp_path)
    (row,) = discover(["alias"])  # relative root, itself a symlink: followed because the user named it
    assert row.path == str(tmp_path / "alias" / "a.jpg")
    assert row.status == "pending"


def test_several_roots_each_report_their_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    make_jpeg(a / "1.jpg", size=(32, 32))
    make_png(b / "2.png", size=(32, 32))
    rows = list(discover([a, b]))
    assert [Path(r.path).name for r in rows] == ["1.jpg", "2.png"]


def test_missing_root_is_an_error_row_not_an_exception(tmp_path):
    rows = list(discover([tmp_path / "nope"]))
    assert [(r.status, r.error_kind) for r in rows] == [("error", "not_found")]
    assert "nope" in rows[0].error


# --------------------------------------------------------------------------------------------------
# bad files


def test_empty_file_is_an_error_with_a_plain_message(tmp_path):
    make_zero_byte(tmp_path / "empty.jpg")
    (row,) = discover([tmp_path])
    assert (row.status, row.error_kind, row.error) == ("error", "empty", "empty file (0 bytes)")
    assert row.size == 0 and row.content_hash is None


def test_empty_file_without_a_media_name_is_just_skipped(tmp_path):
    make_zero_byte(tmp_path / ".gitkeep")
    (row,) = discover([tmp_path])
    assert (row.status, row.error_kind) == ("skipped", "empty")


def test_text_named_png_is_mislabelled(tmp_path):
    make_text_as_png(tmp_path / "fake.png")
    (row,) = discover([tmp_path])
    assert (row.status, row.error_kind) == ("error", "mislabelled")
    assert row.error == "named .png but content is plain text"
    assert row.kind is None and row.content_hash is None


def test_garbage_named_jpg_is_mislabelled(tmp_path):
    (tmp_path / "garbage.jpg").write_bytes(bytes(range(256)) * 8)
    (row,) = discover([tmp_path])
    assert (row.status, row.error_kind) == ("error", "mislabelled")
    assert row.error.startswith("named .jpg but content is not")


def test_png_named_jpg_is_accepted_with_the_sniffed_mime(tmp_path):
    make_png(tmp_path / "actually_png.jpg", size=(32, 32))
    (row,) = discover([tmp_path])
    assert (row.status, row.kind, row.mime, row.error_kind) == ("pending", "image", "image/png", None)


def test_media_without_extension_is_found_by_content(tmp_path):
    make_jpeg(tmp_path / "IMG_0001", size=(32, 32))
    (row,) = discover([tmp_path])
    assert (row.status, row.mime) == ("pending", "image/jpeg")


def test_truncated_and_bomb_images_pass_discovery_for_image_prep_to_judge(tmp_path):
    make_truncated_jpeg(tmp_path / "t.jpg")
    make_png_bomb(tmp_path / "b.png")
    rows = rows_by_rel(tmp_path)
    assert {k: (r.status, r.mime) for k, r in rows.items()} == {
        "b.png": ("pending", "image/png"),
        "t.jpg": ("pending", "image/jpeg"),
    }
    assert os.path.getsize(tmp_path / "b.png") < 5_000


def test_non_media_files_are_skipped_as_not_media(tmp_path):
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(200))
    (tmp_path / "archive.zip").write_bytes(b"PK\x03\x04" + bytes(100))
    (tmp_path / "IMG_0001.json").write_text('{"title": "IMG_0001.jpg"}')  # photo sidecar
    (tmp_path / "IMG_0001.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
    rows = rows_by_rel(tmp_path)
    assert {k: (r.status, r.error_kind, r.kind) for k, r in rows.items()} == {
        ".DS_Store": ("skipped", "companion", None),  # companions: tests/test_formats.py
        "archive.zip": ("skipped", "not_media", None),
        "IMG_0001.json": ("skipped", "not_media", None),
        "IMG_0001.xmp": ("skipped", "companion", None),
    }
    assert all(r.content_hash is None for r in rows.values())


def test_fifo_is_skipped_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    make_jpeg(tmp_path / "z.jpg", size=(16, 16))
    rows = rows_by_rel(tmp_path)
    assert (rows["pipe.jpg"].status, rows["pipe.jpg"].error_kind) == ("skipped", "not_media")
    assert "named pipe" in rows["pipe.jpg"].error
    assert rows["z.jpg"].status == "pending"


def test_undecodable_file_name_is_an_error_with_a_storable_path(tmp_path):
    bad = os.path.join(os.fsencode(tmp_path), b"bad\xff name.jpg")
    try:
        with open(bad, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0" + bytes(100))
    except OSError:
        pytest.skip("filesystem refuses non-UTF-8 names")
    (row,) = discover([tmp_path])
    assert (row.status, row.error_kind) == ("error", "bad_filename")
    row.path.encode("utf-8")  # safe to store
    assert "not valid UTF-8" in row.error


# --------------------------------------------------------------------------------------------------
# unreadable (tests run as root, where chmod does not stop reads: simulate the error)


def test_unreadable_file_is_an_error_row(tmp_path, monkeypatch):
    make_jpeg(tmp_path / "a.jpg", size=(16, 16))
    secret = make_jpeg(tmp_path / "secret.jpg", size=(16, 16))
    real_open = discover_mod._open_fd

    def fake_open(path, flags, *args):
        if os.fspath(path) == str(secret):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(discover_mod, "_open_fd", fake_open)
    rows = rows_by_rel(tmp_path)
    assert rows["a.jpg"].status == "pending"
    assert (rows["secret.jpg"].status, rows["secret.jpg"].error_kind) == ("error", "unreadable")
    assert "permission denied" in rows["secret.jpg"].error
    assert rows["secret.jpg"].size == os.path.getsize(secret)


def test_unreadable_directory_is_an_error_row_and_the_scan_goes_on(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    make_jpeg(locked / "hidden.jpg", size=(16, 16))
    make_jpeg(tmp_path / "visible.jpg", size=(16, 16))
    real_scandir = discover_mod._scandir

    def fake_scandir(path):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(discover_mod, "_scandir", fake_scandir)
    rows = rows_by_rel(tmp_path)
    assert outcome(rows["visible.jpg"]) == "pending"
    assert (rows["locked"].status, rows["locked"].error_kind) == ("error", "unreadable")
    assert "cannot list directory" in rows["locked"].error


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything; covered by the simulated tests")
def test_unreadable_file_with_real_permissions(tmp_path):
    path = make_jpeg(tmp_path / "a.jpg", size=(16, 16))
    path.chmod(0)
    try:
        (row,) = discover([tmp_path])
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert (row.status, row.error_kind) == ("error", "unreadable")


# --------------------------------------------------------------------------------------------------
# symlinks


def test_symlink_loop_is_reported_once_and_not_followed(tmp_path):
    link = make_symlink_loop(tmp_path)
    make_jpeg(link.parent / "inside.jpg", size=(16, 16))
    rows = rows_by_rel(tmp_path)
    assert sorted(rows) == ["loop/inside.jpg", "loop/self"]
    assert (rows["loop/self"].status, rows["loop/self"].error_kind) == ("error", "symlink_loop")
    assert rows["loop/self"].error == "symlink loop: loop/self -> loop"


def test_link_to_an_ancestor_directory_is_a_loop(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    make_jpeg(tmp_path / "a" / "b" / "x.jpg", size=(16, 16))
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "up")
    rows = rows_by_rel(tmp_path)
    assert sorted(rows) == ["a/b/up", "a/b/x.jpg"]
    assert rows["a/b/up"].error == "symlink loop: a/b/up -> a"


def test_self_referencing_file_links_are_a_loop_error(tmp_path):
    os.symlink(tmp_path / "ping.jpg", tmp_path / "pong.jpg")
    os.symlink(tmp_path / "pong.jpg", tmp_path / "ping.jpg")
    rows = rows_by_rel(tmp_path)
    assert {k: (r.status, r.error_kind) for k, r in rows.items()} == {
        "ping.jpg": ("error", "symlink_loop"),
        "pong.jpg": ("error", "symlink_loop"),
    }


def test_symlinked_directory_inside_root_is_not_scanned_twice(tmp_path):
    (tmp_path / "albums" / "2023").mkdir(parents=True)
    make_jpeg(tmp_path / "albums" / "2023" / "a.jpg", size=(16, 16))
    os.symlink(tmp_path / "albums" / "2023", tmp_path / "albums" / "2023_link")  # sorts after "2023"
    os.symlink(tmp_path / "albums" / "2023", tmp_path / "aaa_first_link")  # sorts before "albums"
    rows = rows_by_rel(tmp_path)
    # The real path wins, whatever the name order; each link is reported, not followed again.
    assert sorted(rows) == ["aaa_first_link", "albums/2023/a.jpg", "albums/2023_link"]
    for link in ("aaa_first_link", "albums/2023_link"):
        assert (rows[link].status, rows[link].error_kind) == ("error", "symlink_loop")
        assert "already scanned" in rows[link].error


def test_symlinked_file_inside_root_is_reported_under_its_link_path(tmp_path):
    make_jpeg(tmp_path / "a.jpg", size=(16, 16))
    os.symlink("a.jpg", tmp_path / "b.jpg")
    rows = rows_by_rel(tmp_path)
    assert rows["b.jpg"].status == "pending"
    assert rows["b.jpg"].content_hash == rows["a.jpg"].content_hash  # dedup by hash downstream


def test_link_leaving_the_root_is_skipped_as_outside_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    make_jpeg(outside / "private.jpg", size=(16, 16))
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "dir_link")
    os.symlink(outside / "private.jpg", root / "file_link.jpg")
    os.symlink("../outside/missing.jpg", root / "broken_outside.jpg")
    rows = rows_by_rel(root)
    assert {k: (r.status, r.error_kind) for k, r in rows.items()} == {
        "broken_outside.jpg": ("skipped", "outside_root"),
        "dir_link": ("skipped", "outside_root"),
        "file_link.jpg": ("skipped", "outside_root"),
    }
    assert "outside the scanned folder" in rows["dir_link"].error
    assert not any("private" in k for k in rows)


def test_broken_link_is_an_error(tmp_path):
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    (row,) = discover([tmp_path])
    assert (row.status, row.error_kind) == ("error", "broken_link")
    assert "dangling.jpg" in row.error


# --------------------------------------------------------------------------------------------------
# walk rules


def test_git_pycache_and_enrichignore_directories_are_left_out_silently(tmp_path):
    for d in (".git", "__pycache__", "private", "keep"):
        (tmp_path / d).mkdir()
        make_jpeg(tmp_path / d / "x.jpg", size=(16, 16))
    (tmp_path / "private" / ".enrichignore").write_text("")
    (tmp_path / "private" / "sub").mkdir()
    make_jpeg(tmp_path / "private" / "sub" / "y.jpg", size=(16, 16))
    rows = rows_by_rel(tmp_path)
    assert sorted(rows) == ["keep/x.jpg"]


def test_order_is_sorted_by_name_and_deterministic(tmp_path):
    for name in ["b.jpg", "a.jpg", "C.jpg", "z/a.jpg", "y/b.jpg", "10.jpg", "2.jpg"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        make_jpeg(tmp_path / name, size=(8, 8))
    first = [r.path for r in discover([tmp_path], workers=4)]
    again = [r.path for r in discover([tmp_path], workers=1)]
    rel = [os.path.relpath(p, tmp_path) for p in first]
    assert rel == ["10.jpg", "2.jpg", "C.jpg", "a.jpg", "b.jpg", "y/b.jpg", "z/a.jpg"]
    assert first == again


def test_thread_pool_preserves_order_over_many_files(tmp_path):
    payload = b"\xff\xd8\xff\xe0" + bytes(64)
    for i in range(300):
        (tmp_path / f"f{i:04d}.jpg").write_bytes(payload + i.to_bytes(4, "big"))
    rows = list(discover([tmp_path], workers=8))
    assert [Path(r.path).name for r in rows] == [f"f{i:04d}.jpg" for i in range(300)]
    assert len({r.content_hash for r in rows}) == 300


def test_lookahead_is_bounded_so_memory_stays_flat(tmp_path, monkeypatch):
    for i in range(2000):
        (tmp_path / f"{i:04d}.jpg").write_bytes(b"\xff\xd8\xff" + i.to_bytes(2, "big"))
    probed = []
    real_probe = discover_mod._probe

    def counting_probe(path, *args):
        probed.append(path)
        return real_probe(path, *args)

    monkeypatch.setattr(discover_mod, "_probe", counting_probe)
    it = discover([tmp_path], workers=2)
    next(it)
    bound = (max(4 * 2, 16) + 1) * discover_mod.PROBE_CHUNK
    assert len(probed) <= bound
    it.close()
    assert len(probed) <= bound


def test_closing_the_iterator_early_stops_cleanly(tmp_path):
    for i in range(100):
        (tmp_path / f"{i:03d}.jpg").write_bytes(b"\xff\xd8\xff" + bytes(10) + bytes([i]))
    it = discover([tmp_path], workers=4)
    first = next(it)
    it.close()
    assert first.path.endswith("000.jpg")


# --------------------------------------------------------------------------------------------------
# hashing and batches


def test_hash_file_streams_sha256(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert hash_file(path) == hashlib.sha256(data).hexdigest()
    assert hash_file(path, block=4096) == hashlib.sha256(data).hexdigest()


def test_discover_hash_matches_hash_file_and_can_be_turned_off(tmp_path):
    path = make_jpeg(tmp_path / "a.jpg")
    (hashed,) = discover([tmp_path])
    (plain,) = discover([tmp_path], hash_files=False)
    assert hashed.content_hash == hash_file(path)
    assert plain.content_hash is None and plain.status == "pending"


def test_iter_batches_yields_lists_of_n_and_a_short_tail():
    assert list(iter_batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(iter_batches([], 3)) == []
    with pytest.raises(ValueError):
        list(iter_batches(range(3), 0))
