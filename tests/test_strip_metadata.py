"""Personal metadata is stripped from audio, video and PDFs before upload (tasks/strip_metadata.py through
tasks/prepare.prepare_file): what the copy still holds, that it still probes the same, the opt-in, refusals
of odd files, and that temporary copies go away."""
from __future__ import annotations

import gc
import os
import struct
import subprocess
import sys
from pathlib import Path

import mutagen
import pytest

from enrich.errors import MediaError
from enrich.tasks.discover import discover
from enrich.tasks.media_info import MediaLimits, read_audio, read_pdf, read_video
from enrich.tasks.prepare import PrepareOptions, PreparedItem, prepare_file
from enrich.tasks.strip_metadata import STRIP_FAILED, media_temp_dir, strip_metadata
from tests.media_factory import (
    LOCATION_ISO6709, MP4_VIDEO_FILLER, OWNER, PERSONAL_STRINGS, make_flac, make_m4a, make_mp3, make_mp4, make_ogg_opus,
    make_pdf, make_raw_pdf, make_wav, make_webm,
)

# name, builder(path, personal), mime, probe(path, mime)
FORMATS = {
    "song.mp3": (lambda p, personal: make_mp3(p, 5, id3=personal, personal=personal), "audio/mp3"),
    "song.flac": (lambda p, personal: make_flac(p, 5, personal=personal), "audio/flac"),
    "memo.opus": (lambda p, personal: make_ogg_opus(p, 5, personal=personal), "audio/ogg"),
    "memo.wav": (lambda p, personal: make_wav(p, 5, personal=personal), "audio/wav"),
    "voice.m4a": (lambda p, personal: make_m4a(p, 5, personal=personal), "audio/mp4"),
    "clip.mp4": (lambda p, personal: make_mp4(p, 5, personal=personal), "video/mp4"),
    "clip.mov": (lambda p, personal: make_mp4(p, 5, quicktime=True, personal=personal), "video/quicktime"),
    "screen.webm": (lambda p, personal: make_webm(p, 5, personal=personal), "video/webm"),
    "scan.pdf": (lambda p, personal: make_pdf(p, 3, personal=personal), "application/pdf"),
}
# an earlier revision's author, the phone's maker and the recording date also count as personal here
LEAKS = PERSONAL_STRINGS + ("A. Example", "Google", "2023-07-14")


def probe(path: Path, mime: str) -> dict:
    if mime == "application/pdf":
        return read_pdf(path)
    if mime.startswith("video/"):
        return read_video(path, mime)
    return read_audio(path, mime)


def leaks(data: bytes) -> list[str]:
    return [s for s in LEAKS if s.encode() in data]


def prepare(path: Path, *, keep_metadata: bool = False) -> PreparedItem | MediaError:
    (file,) = list(discover([path], workers=1))
    assert file.status == "pending", file
    return prepare_file(file, PrepareOptions(keep_metadata=keep_metadata, limits=MediaLimits()))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_stripped_copy_holds_no_personal_metadata_and_probes_the_same(tmp_path, name):
    build, mime = FORMATS[name]
    original = build(tmp_path / name, True)
    assert leaks(original.read_bytes()), "the fixture must carry personal metadata"
    copy = strip_metadata(original, mime)
    assert copy is not None and copy != original
    try:
        assert leaks(copy.read_bytes()) == []
        before, after = probe(original, mime), probe(copy, mime)
        if mime == "audio/mp3":  # no Xing header: mutagen estimates from the size, which counted the APE tag
            assert abs(after.pop("seconds") - before.pop("seconds")) < 0.05
        assert after == before
        assert original.read_bytes() != copy.read_bytes() and leaks(original.read_bytes()), "original untouched"
    finally:
        copy.unlink()


@pytest.mark.parametrize("name", ["song.mp3", "song.flac", "memo.opus", "voice.m4a"])
def test_mutagen_finds_no_tags_in_the_stripped_audio(tmp_path, name):
    build, mime = FORMATS[name]
    original = build(tmp_path / name, True)
    assert mutagen.File(original).tags
    copy = strip_metadata(original, mime)
    try:
        assert not mutagen.File(copy).tags
        if name == "song.mp3":
            from mutagen.apev2 import APEv2, APENoHeaderError

            with pytest.raises(APENoHeaderError):
                APEv2(copy)
    finally:
        copy.unlink()


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_file_without_metadata_is_sent_as_is_without_a_copy(tmp_path, name):
    build, mime = FORMATS[name]
    if name.endswith(".pdf"):  # pypdf always writes a /Producer: a hand-made PDF has no /Info at all
        path = make_raw_pdf(tmp_path / name, [b"<< /Type /Catalog /Pages 2 0 R >>",
                                              b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                                              b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"])
    else:
        path = build(tmp_path / name, False)
    assert strip_metadata(path, mime) is None


def test_mp4_metadata_boxes_become_free_space_and_the_gps_track_is_zeroed_in_place(tmp_path):
    from mutagen.mp4 import MP4

    original = make_mp4(tmp_path / "phone.mp4", 5, personal=True)
    copy = strip_metadata(original, "video/mp4")
    try:
        data, before = copy.read_bytes(), original.read_bytes()
        assert len(data) == len(before) and data.index(b"mdat") == before.index(b"mdat"), "no sample offset moves"
        assert LOCATION_ISO6709.encode() not in data and b"\xa9xyz" not in data and b"mdta" not in data
        assert b"udta" not in data and b"uuid" not in data
        mvhd = data.index(b"mvhd") + 4
        assert data[mvhd + 4: mvhd + 12] == bytes(8), "creation and modification times are zeroed"
        assert not MP4(copy).tags
        assert before.count(b"GPS5") == 3 and b"GPS5" not in data, "the GPS track's samples are zeroed"
        filler = before.index(MP4_VIDEO_FILLER)
        assert data[filler: filler + len(MP4_VIDEO_FILLER)] == MP4_VIDEO_FILLER, "the frames next to them stay"
        assert data.index(b"GoPro MET") == before.index(b"GoPro MET"), "the track itself stays"
    finally:
        copy.unlink()


def test_pdf_copy_has_no_info_no_xmp_and_the_same_pages(tmp_path):
    from pypdf import PdfReader

    original = make_pdf(tmp_path / "scan.pdf", 3, personal=True)
    assert PdfReader(original).metadata["/Author"] == "A. Example" and OWNER.encode() in original.read_bytes()
    copy = strip_metadata(original, "application/pdf")
    try:
        reader = PdfReader(copy)
        assert reader.metadata is None and reader.xmp_metadata is None
        assert "/Metadata" not in reader.pages[0] and len(reader.pages) == 3
        assert b"xpacket" not in copy.read_bytes()
    finally:
        copy.unlink()


def test_prepared_items_point_at_a_stripped_copy_deleted_when_the_item_is_done(tmp_path):
    path = make_mp3(tmp_path / "song.mp3", 5, personal=True)
    item = prepare(path)
    assert isinstance(item, PreparedItem)
    (part,) = item.media
    sent = part.path
    assert sent != path and sent.parent == media_temp_dir() and leaks(sent.read_bytes()) == []
    assert os.stat(sent).st_mode & 0o077 == 0, "copies of personal media are private to the user"
    assert item.meta["duration_s"] == pytest.approx(read_audio(path, "audio/mp3")["seconds"])
    del item, part
    gc.collect()
    assert not sent.exists()


def test_release_deletes_the_copy_at_once_even_while_the_item_is_still_referenced(tmp_path):
    item = prepare(make_pdf(tmp_path / "scan.pdf", 2, personal=True))
    sent = item.media[0].path
    held = [item]  # e.g. by an exception's traceback after a failed request
    item.release()
    assert not sent.exists() and held
    item.release()  # idempotent
    original = prepare(make_wav(tmp_path / "plain.wav", 1))
    original.release()
    assert (tmp_path / "plain.wav").exists(), "an original file is never deleted"


def test_keep_metadata_sends_the_original_files(tmp_path):
    for name, (build, _) in FORMATS.items():
        path = build(tmp_path / name, True)
        item = prepare(path, keep_metadata=True)
        assert isinstance(item, PreparedItem), (name, item)
        assert item.media[0].path == path, name


def test_an_odd_file_that_cannot_be_stripped_is_refused_not_sent(tmp_path):
    # an MP4 that plays and probes fine, but a box inside its track claims to run past the track
    path = make_mp4(tmp_path / "odd.mp4", 5, personal=True)
    data = bytearray(path.read_bytes())
    trak = data.index(b"trak") - 4
    trak_size = struct.unpack_from(">I", data, trak)[0]
    data[trak + trak_size: trak + trak_size] = struct.pack(">I4s", 1000, b"junk")
    struct.pack_into(">I", data, trak, trak_size + 8)
    moov = data.index(b"moov") - 4
    struct.pack_into(">I", data, moov, struct.unpack_from(">I", data, moov)[0] + 8)
    path.write_bytes(bytes(data))
    assert read_video(path, "video/mp4")["seconds"] == 5.0
    before = set(media_temp_dir().iterdir())

    err = prepare(path)
    assert isinstance(err, MediaError) and err.kind == STRIP_FAILED == "metadata_strip_failed"
    assert "junk" in str(err) and "not sent" in str(err)
    assert set(media_temp_dir().iterdir()) == before, "a failed copy leaves nothing behind"
    assert isinstance(prepare(path, keep_metadata=True), PreparedItem), "the user may still send it as it is"


def test_a_type_without_a_stripper_is_refused(tmp_path):
    path = make_wav(tmp_path / "a.wav", 1)
    with pytest.raises(MediaError) as err:
        strip_metadata(path, "audio/x-new-format")
    assert err.value.kind == STRIP_FAILED and "--keep-metadata" in str(err.value)


def test_copies_left_by_a_killed_process_are_removed_by_the_next_one(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    code = ("import os; from tasks.strip_metadata import new_temp_file; p = new_temp_file('.mp4'); "
            "print(p, flush=True); os._exit(0)")  # os._exit: like a kill, no atexit handlers run
    left = Path(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               check=True, cwd=Path(__file__).parent.parent).stdout.strip())
    assert left.exists()
    code = "from tasks.strip_metadata import media_temp_dir; print(media_temp_dir())"
    fresh = Path(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True, cwd=Path(__file__).parent.parent).stdout.strip())
    assert not left.parent.exists(), "the dead process's folder is swept"
    assert not fresh.exists(), "a normal exit removes the process's folder"
    assert fresh.parent == left.parent.parent

