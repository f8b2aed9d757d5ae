"""Every image format Pillow decodes, camera RAW previews and companion files (issue 17), on files the
tests build (tests/formats_factory.py)."""
from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from enrich.errors import MediaError
from enrich.tasks.discover import discover
from enrich.tasks.prepare_image import prepare_image, read_image_meta, read_image_size
from enrich.tasks.raw_preview import find_preview
from enrich.tasks.sniff import companion_of, refine_tiff, sniff
from tests.formats_factory import (
    CYAN_INK,
    make_cmyk_icc,
    make_cr2,
    make_cr3,
    make_dng,
    make_ico,
    make_nef,
    make_orf,
    make_psd,
    make_raf,
    make_raw_without_preview,
    make_tiff_pages,
    preview_jpeg,
    save_picture,
    write_tiff_rgb16,
)
from tests.media_factory import BACKGROUND, CAMERA_MAKE, CAMERA_MODEL, DEFAULT_GPS, MARKER_COLOR


def close(a, b, tol=40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def pixels(prepared):
    img = Image.open(io.BytesIO(prepared.data))
    assert img.format == "JPEG" and img.mode == "RGB"
    return img


def sniffed(path):
    with open(path, "rb") as f:
        return sniff(f.read(1024), path.suffix.lower())


def assert_picture(prepared, size=None):
    """The upright test picture: red marker top-left, the blue background at the bottom middle."""
    img = pixels(prepared)
    if size is not None:
        assert img.size == size
    assert close(img.getpixel((1, 1)), MARKER_COLOR), img.getpixel((1, 1))
    assert close(img.getpixel((img.width // 2, img.height - 2)), BACKGROUND), img.getpixel((img.width // 2, img.height - 2))


# -- image formats -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, name, mode, mime", [
    ("BMP", "a.bmp", "RGB", "image/bmp"),
    ("BMP", "p.bmp", "P", "image/bmp"),
    ("TGA", "a.tga", "RGB", "image/x-tga"),
    ("TGA", "rgba.tga", "RGBA", "image/x-tga"),
    ("JPEG2000", "a.jp2", "RGB", "image/jp2"),
    ("JPEG2000", "a.j2k", "RGB", "image/x-jp2-codestream"),
    ("PPM", "a.ppm", "RGB", "image/x-portable-pixmap"),
    ("DDS", "a.dds", "RGB", "image/vnd.ms-dds"),
    ("QOI", "a.qoi", "RGB", "image/qoi"),
    ("SGI", "a.sgi", "RGB", "image/sgi"),
    ("PCX", "a.pcx", "RGB", "image/x-pcx"),
    ("TIFF", "lab.tif", "LAB", "image/tiff"),
    ("TIFF", "palette.tif", "P", "image/tiff"),
    ("TIFF", "a.tiff", "RGBA", "image/tiff"),
])
def test_other_formats_are_recognised_by_content_and_prepared(tmp_path, fmt, name, mode, mime):
    path = save_picture(tmp_path / name, fmt, mode=mode)
    assert sniffed(path) == ("image", mime)
    # content decides, not the name (TGA and PCX have no real magic number: their name must say so)
    renamed = path.rename(tmp_path / ("renamed" + path.suffix if fmt in ("TGA", "PCX") else "renamed.bin"))
    prepared = prepare_image(renamed)
    assert_picture(prepared, (64, 48))
    assert prepared.meta.format == fmt


def test_multi_page_tiff_uses_the_first_page_and_its_exif(tmp_path):
    path = make_tiff_pages(tmp_path / "scan.tif", [((64, 48), BACKGROUND), ((640, 480), (0, 255, 0))])
    prepared = prepare_image(path)
    assert_picture(prepared, (64, 48))
    meta = prepared.meta
    assert (meta.camera_make, meta.camera_model) == (CAMERA_MAKE, CAMERA_MODEL)
    assert meta.taken_at is not None and meta.taken_at.year == 2023
    assert (meta.gps_lat, meta.gps_lon) == pytest.approx(DEFAULT_GPS, abs=1e-4)


def test_16_bit_rgb_tiff_is_scaled_to_8_bit(tmp_path):
    path = write_tiff_rgb16(tmp_path / "scan16.tif", (256, 16), seed_color=(0, 0x8000, 0xC000))
    with Image.open(path) as raw:
        assert raw.format == "TIFF"
    img = pixels(prepare_image(path))
    assert img.size == (256, 16)
    left, right = img.getpixel((1, 8)), img.getpixel((254, 8))
    assert left[0] < 10 and right[0] > 245  # the red gradient spans the range, not clipped
    assert close(left[1:], (0x8000 // 257, 0xC000 // 257), tol=4)


@pytest.mark.parametrize("mode, value", [("I;16", 0x8000), ("I", 40000), ("F", 0.5)])
def test_high_bit_depth_gray_is_scaled_not_clipped(tmp_path, mode, value):
    path = tmp_path / f"gray_{mode.replace(';', '')}.tif"
    Image.new(mode, (32, 32), value).save(path, "TIFF")
    img = pixels(prepare_image(path))
    expected = {"I;16": 0x8000 / 257, "I": 40000 / 257, "F": 127.5}[mode]
    assert abs(img.getpixel((5, 5))[0] - expected) <= 3, img.getpixel((5, 5))


def test_one_bit_and_gray_alpha_tiffs_become_rgb(tmp_path):
    bw = Image.new("1", (16, 16), 0)
    bw.paste(1, (0, 0, 8, 16))
    bw.save(tmp_path / "bw.tif", "TIFF")
    img = pixels(prepare_image(tmp_path / "bw.tif"))
    assert close(img.getpixel((2, 2)), (255, 255, 255), 10) and close(img.getpixel((13, 2)), (0, 0, 0), 10)
    la = Image.new("LA", (16, 16), (0, 0))  # black but fully transparent
    la.save(tmp_path / "la.tif", "TIFF")
    assert close(pixels(prepare_image(tmp_path / "la.tif")).getpixel((5, 5)), (255, 255, 255), 4)


def test_cmyk_tiff_is_converted_through_its_icc_profile(tmp_path):
    Image.new("CMYK", (40, 30), (255, 0, 0, 0)).save(tmp_path / "cmyk.tif", "TIFF", icc_profile=make_cmyk_icc())
    Image.new("CMYK", (40, 30), (255, 0, 0, 0)).save(tmp_path / "plain.tif", "TIFF")
    with_profile = pixels(prepare_image(tmp_path / "cmyk.tif")).getpixel((10, 10))
    without = pixels(prepare_image(tmp_path / "plain.tif")).getpixel((10, 10))
    assert close(with_profile, CYAN_INK, 12), with_profile
    assert close(without, (0, 255, 255), 8), without  # no profile: the naive conversion


def test_psd_composite_is_prepared(tmp_path):
    path = make_psd(tmp_path / "layered.psd")
    assert sniffed(path) == ("image", "image/vnd.adobe.photoshop")
    prepared = prepare_image(path)
    assert_picture(prepared, (64, 48))
    assert prepared.meta.format == "PSD"


def test_ico_and_icns_use_their_largest_size(tmp_path):
    ico = make_ico(tmp_path / "app.ico", sizes=((16, 16), (48, 48), (128, 128)))
    assert sniffed(ico) == ("image", "image/x-icon")
    assert pixels(prepare_image(ico)).size == (128, 128)
    icns = save_picture(tmp_path / "app.icns", "ICNS", size=(256, 256))  # Pillow writes 16 to 1024 px
    assert sniffed(icns) == ("image", "image/icns")
    assert pixels(prepare_image(icns, max_side=3072)).size == (1024, 1024)


def test_pixel_limit_is_checked_from_the_header_for_other_formats(tmp_path, monkeypatch):
    path = save_picture(tmp_path / "big.bmp", "BMP", size=(400, 300))

    def no_decode(self, *a, **k):
        raise AssertionError("decoded a too-large image")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decode)
    with pytest.raises(MediaError) as err:
        prepare_image(path, max_pixels=100_000)
    assert err.value.kind == "too_large"


def test_undecodable_content_under_an_image_name_is_not_sniffed_as_image():
    assert sniff(b"BM" + bytes(100), ".txt") is None  # "BM" text, not a bitmap header
    assert sniff(b"\x00\x00\x01\x00" + bytes(60), "") is None  # ICO magic but no entries
    assert sniff(b"hello world", ".tga") == ("document", "text/plain")  # text is never a TGA


# -- RAW -------------------------------------------------------------------------------------------------------
RAW_MAKERS = {
    "dng": (make_dng, "image/x-adobe-dng", "DNG", (1024, 683)),
    "CR2": (make_cr2, "image/x-canon-cr2", "CR2", (1200, 800)),
    "nef": (make_nef, "image/x-nikon-nef", "NEF", (960, 640)),
    "RAF": (make_raf, "image/x-fuji-raf", "RAF", (1280, 853)),
    "CR3": (make_cr3, "image/x-canon-cr3", "CR3", (1620, 1080)),
    "ORF": (make_orf, "image/x-olympus-orf", "ORF", (1600, 1200)),  # the preview only the file scan finds
}


@pytest.mark.parametrize("ext", list(RAW_MAKERS))
@pytest.mark.parametrize("orientation", [1, 6])
def test_raw_is_described_from_its_largest_preview_oriented_by_the_raw(tmp_path, ext, orientation):
    maker, mime, fmt, size = RAW_MAKERS[ext]
    path = maker(tmp_path / f"shot.{ext}", orientation=orientation)
    assert sniffed(path) == ("image", mime)
    preview = find_preview(path, fmt)
    assert (preview.width, preview.height) == size  # the largest of its previews, never the sensor data
    prepared = prepare_image(path, max_side=500)
    upright = size if orientation == 1 else size[::-1]
    img = pixels(prepared)
    assert max(img.size) == 500 and (img.width > img.height) == (upright[0] > upright[1])
    assert close(img.getpixel((1, 1)), MARKER_COLOR), img.getpixel((1, 1))
    meta = prepared.meta
    assert (meta.width, meta.height) == upright and meta.format == fmt
    assert meta.taken_at is not None and meta.taken_at.isoformat() == "2023-07-14T15:30:45"
    if ext != "ORF":  # (the ORF-like file has no GPS IFD)
        assert (meta.gps_lat, meta.gps_lon) == pytest.approx(DEFAULT_GPS, abs=1e-4)
    assert meta.camera_make and meta.camera_model


def test_raw_preview_ignores_the_preview_jpegs_own_orientation(tmp_path):
    # A DNG whose IFD0 says 1 while the preview's own EXIF says 6: the RAW's tag wins.
    path = make_dng(tmp_path / "a.dng", orientation=1, preview_exif_orientation=6)
    with Image.open(io.BytesIO(path.read_bytes()[find_preview(path, "DNG").offset:])) as preview:
        assert preview.getexif().get(0x0112) == 6
    img = pixels(prepare_image(path))
    assert img.width > img.height and close(img.getpixel((1, 1)), MARKER_COLOR)


def test_raw_metadata_and_size_without_decoding(tmp_path, monkeypatch):
    path = make_cr2(tmp_path / "IMG.CR2", orientation=8)

    def no_decode(self, *a, **k):
        raise AssertionError("decoded pixels")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decode)
    meta = read_image_meta(path)
    assert (meta.width, meta.height, meta.camera_make) == (800, 1200, "Canon")
    assert read_image_size(path) == (1200, 800)


def test_raw_without_a_preview_is_a_clear_item_error(tmp_path):
    path = make_raw_without_preview(tmp_path / "DSC.ARW")
    with pytest.raises(MediaError) as err:
        prepare_image(path)
    assert err.value.kind == "raw_no_preview"
    assert "ARW" in str(err.value) and "preview" in str(err.value)


def test_truncated_or_corrupt_raw_is_an_item_error(tmp_path):
    good = make_nef(tmp_path / "good.nef").read_bytes()
    (tmp_path / "cut.nef").write_bytes(good[: len(good) // 3])
    (tmp_path / "junk.nef").write_bytes(b"MM\x00*" + struct.pack(">I", 10 ** 8) + bytes(200))
    for name in ("cut.nef", "junk.nef"):
        with pytest.raises(MediaError) as err:
            prepare_image(tmp_path / name)
        assert err.value.kind in ("raw_no_preview", "corrupt", "truncated"), (name, err.value.kind)


def test_raw_preview_pixel_limit_is_checked_before_decoding(tmp_path):
    path = make_cr3(tmp_path / "a.CR3")
    with pytest.raises(MediaError) as err:
        prepare_image(path, max_pixels=1_000_000)
    assert err.value.kind == "too_large" and "1620x1080" in str(err.value)


# -- companions ------------------------------------------------------------------------------------------------
def test_companion_files_are_skipped_quietly_by_name(tmp_path):
    names = {"IMG_0001.CR2.xmp": "XMP", "IMG_0001.xmp": "XMP", "IMG_0002.AAE": "iOS", "GOPR0003.THM": "thumbnail",
             "GL010004.LRV": "proxy", "photo.jpg.pp3": "RawTherapee", "photo.NEF.dop": "DxO",
             "Catalog.lrcat": "Lightroom", "Thumbs.db": "Windows", "._IMG_0001.JPG": "macOS"}
    for name in names:
        (tmp_path / name).write_bytes(preview_jpeg((32, 24)) if name.endswith(("THM", "JPG")) else b"<x/>")
    rows = {r.path.rsplit("/", 1)[1]: r for r in discover([tmp_path], workers=1)}
    assert set(rows) == set(names)
    for name, word in names.items():
        row = rows[name]
        assert (row.status, row.error_kind, row.content_hash) == ("skipped", "companion", None), name
        assert word in row.error, (name, row.error)
    assert companion_of("holiday.jpg") is None and companion_of("notes.txt") is None


def test_raw_formats_are_told_apart_by_content(tmp_path):
    dng = make_dng(tmp_path / "phone.tif")  # a DNG under a TIFF name: its DNGVersion tag says what it is
    cr2 = make_cr2(tmp_path / "renamed.tif")  # CR2's own marker after the TIFF header
    raf = make_raf(tmp_path / "x.bin")
    cr3 = make_cr3(tmp_path / "y.mp4")  # ISO BMFF with the `crx ` brand is not a video
    assert [refine_tiff(str(p), sniffed(p)[1]) for p in (dng, cr2, raf, cr3)] == [
        "image/x-adobe-dng", "image/x-canon-cr2", "image/x-fuji-raf", "image/x-canon-cr3"]
    assert sniff(b"IIRO\x08\x00\x00\x00" + bytes(64), ".bin") == ("image", "image/x-olympus-orf")
    assert sniff(b"IIU\x00\x08\x00\x00\x00" + bytes(64), ".bin") == ("image", "image/x-panasonic-rw2")
    assert sniff(b"II*\x00\x08\x00\x00\x00" + bytes(64), ".NEF") == ("image", "image/x-nikon-nef")
    assert sniff(b"II*\x00\x08\x00\x00\x00" + bytes(64), ".tif") == ("image", "image/tiff")
    # and discovered and prepared as RAW whatever the name
    mimes = {r.path.rsplit("/", 1)[1]: r.mime for r in discover([tmp_path], workers=1)}
    assert mimes["phone.tif"] == "image/x-adobe-dng" and mimes["y.mp4"] == "image/x-canon-cr3"
    assert prepare_image(dng).meta.format == "DNG" and prepare_image(cr3).meta.format == "CR3"
