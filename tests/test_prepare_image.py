"""Image prep: oriented, downscaled, metadata-free JPEG bytes; bad images are MediaErrors."""
from __future__ import annotations

import io
import pickle
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image, ImageFile
from PIL.JpegImagePlugin import JpegImageFile

from enrich.errors import MediaError
from enrich.tasks.prepare_image import (
    RESOLUTION_MAX_SIDE,
    ImageMeta,
    PreparedImage,
    prepare_image,
    read_image_meta,
)
from tests.media_factory import (
    BACKGROUND,
    CAMERA_MAKE,
    CAMERA_MODEL,
    CAMERA_SERIAL,
    COMMENT,
    MARKER_COLOR,
    avif_supported,
    display_p3_icc,
    make_avif,
    make_gif,
    make_heic,
    make_jpeg,
    make_large_jpeg,
    make_photo_library,
    make_png,
    make_png_bomb,
    make_text_as_png,
    make_truncated_jpeg,
    make_webp,
    make_zero_byte,
)


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory) -> Path:
    return make_large_jpeg(tmp_path_factory.mktemp("large") / "12mp.jpg")


def close(a, b, tol=40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def assert_no_metadata(data: bytes) -> None:
    assert data.startswith(b"\xff\xd8\xff")
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    assert len(img.getexif()) == 0
    for key in ("exif", "icc_profile", "xmp", "comment", "XML:com.adobe.xmp"):
        assert key not in img.info, key
    assert b"Exif\x00\x00" not in data
    assert b"GPS" not in data
    assert b"http://ns.adobe.com/xap/1.0/" not in data and b"xmpmeta" not in data
    assert b"ICC_PROFILE" not in data
    assert COMMENT not in data
    assert CAMERA_SERIAL.encode() not in data and CAMERA_MAKE.encode() not in data


# --------------------------------------------------------------------------------------------------
# metadata stripping


def test_uploaded_jpeg_has_no_exif_gps_xmp_icc_or_comment(tmp_path):
    src = make_jpeg(tmp_path / "a.jpg")
    raw = src.read_bytes()
    assert b"Exif\x00\x00" in raw and b"GPS" in raw and COMMENT in raw  # the fixture does carry them
    out = prepare_image(src)
    assert out.mime == "image/jpeg"
    assert_no_metadata(out.data)


@pytest.mark.parametrize(
    ("maker", "name"),
    [
        (make_png, "a.png"),
        (make_webp, "a.webp"),
        (make_gif, "a.gif"),
        (lambda p: make_heic(p, size=(160, 120)), "a.heic"),
    ],
)
def test_every_format_is_reencoded_as_metadata_free_jpeg(tmp_path, maker, name):
    out = prepare_image(maker(tmp_path / name))
    assert out.mime == "image/jpeg"
    assert_no_metadata(out.data)
    assert Image.open(io.BytesIO(out.data)).size == (out.width, out.height)


@pytest.mark.skipif(not avif_supported(), reason="Pillow built without AVIF")
def test_avif_is_supported(tmp_path):
    out = prepare_image(make_avif(tmp_path / "a.avif"))
    assert (out.width, out.height, out.meta.format) == (320, 240, "AVIF")
    assert_no_metadata(out.data)


def test_keep_metadata_opt_in_keeps_exif_with_orientation_reset(tmp_path):
    out = prepare_image(make_jpeg(tmp_path / "a.jpg", orientation=6), keep_metadata=True, max_side=768)
    exif = Image.open(io.BytesIO(out.data)).getexif()
    assert exif[0x010F] == CAMERA_MAKE
    assert exif.get_ifd(0x8825)  # GPS kept, the user asked for it
    assert exif[0x0112] == 1  # the pixels are already upright
    assert (out.width, out.height) == (480, 640)


# --------------------------------------------------------------------------------------------------
# metadata extraction


def test_read_image_meta_extracts_gps_time_and_camera(tmp_path):
    meta = read_image_meta(make_jpeg(tmp_path / "a.jpg"))
    assert meta == ImageMeta(
        width=640,
        height=480,
        taken_at=datetime(2023, 7, 14, 15, 30, 45),
        gps_lat=pytest.approx(48.858222, abs=1e-6),
        gps_lon=pytest.approx(2.2945, abs=1e-6),
        camera_make=CAMERA_MAKE,
        camera_model=CAMERA_MODEL,
        format="JPEG",
    )


def test_gps_south_and_west_are_negative(tmp_path):
    meta = read_image_meta(make_jpeg(tmp_path / "sydney.jpg", exif_gps=(-33.856784, -151.215297)))
    assert meta.gps_lat == pytest.approx(-33.856784, abs=1e-6)
    assert meta.gps_lon == pytest.approx(-151.215297, abs=1e-6)


def test_offset_time_original_makes_taken_at_timezone_aware(tmp_path):
    meta = read_image_meta(make_jpeg(tmp_path / "a.jpg", offset_time="+02:00"))
    assert meta.taken_at == datetime(2023, 7, 14, 15, 30, 45, tzinfo=timezone(timedelta(hours=2)))
    meta = read_image_meta(make_jpeg(tmp_path / "b.jpg", offset_time="-05:30"))
    assert meta.taken_at.utcoffset() == -timedelta(hours=5, minutes=30)


def test_missing_or_junk_exif_gives_none(tmp_path):
    meta = read_image_meta(
        make_jpeg(tmp_path / "a.jpg", exif_gps=False, taken_at="0000:00:00 00:00:00", make=None, model=None)
    )
    assert (meta.taken_at, meta.gps_lat, meta.gps_lon, meta.camera_make, meta.camera_model) == (None,) * 5
    meta = read_image_meta(make_gif(tmp_path / "a.gif"))
    assert (meta.format, meta.taken_at, meta.gps_lat) == ("GIF", None, None)


def test_prepared_image_carries_the_same_meta(tmp_path):
    src = make_jpeg(tmp_path / "a.jpg", orientation=6)
    assert prepare_image(src).meta == read_image_meta(src)


def test_read_image_meta_does_not_decode_pixels(tmp_path, monkeypatch):
    src = make_jpeg(tmp_path / "a.jpg", orientation=8)

    def no_decode(self, *a, **k):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    meta = read_image_meta(src)
    assert (meta.width, meta.height) == (480, 640)


@pytest.mark.parametrize(
    ("maker", "name", "fmt"),
    [(make_png, "a.png", "PNG"), (make_webp, "a.webp", "WEBP"), (lambda p: make_heic(p, size=(64, 48)), "a.heic", "HEIF")],
)
def test_read_image_meta_reads_exif_from_other_formats(tmp_path, maker, name, fmt):
    meta = read_image_meta(maker(tmp_path / name))
    assert meta.format == fmt
    assert meta.gps_lat == pytest.approx(48.858222, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# orientation and size


def test_orientation_6_turns_640x480_into_480x640(tmp_path):
    out = prepare_image(make_jpeg(tmp_path / "a.jpg", size=(640, 480), orientation=6), max_side=768)
    assert (out.width, out.height) == (480, 640)
    assert (out.meta.width, out.meta.height) == (480, 640)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("max_side", [768, 200])  # 200: draft-mode path and orientation together
def test_every_orientation_puts_the_marker_top_left(tmp_path, orientation, max_side):
    out = prepare_image(make_jpeg(tmp_path / "a.jpg", size=(640, 480), orientation=orientation), max_side=max_side)
    img = Image.open(io.BytesIO(out.data)).convert("RGB")
    w, h = img.size
    assert (w > h) == (orientation < 5)
    assert close(img.getpixel((2, 2)), MARKER_COLOR)
    assert close(img.getpixel((w - 3, h - 3)), BACKGROUND)
    assert close(img.getpixel((w - 3, 2)), BACKGROUND)
    assert close(img.getpixel((2, h - 3)), BACKGROUND)


def test_downscales_so_the_long_side_fits(tmp_path):
    out = prepare_image(make_png(tmp_path / "a.png", size=(1000, 400)), max_side=500)
    assert (out.width, out.height) == (500, 200)
    out = prepare_image(make_jpeg(tmp_path / "b.jpg", size=(300, 900)), max_side=768)
    assert (out.width, out.height) == (256, 768)


def test_never_upscales(tmp_path):
    out = prepare_image(make_jpeg(tmp_path / "a.jpg", size=(200, 100)), max_side=RESOLUTION_MAX_SIDE["high"])
    assert (out.width, out.height) == (200, 100)


def test_resolution_presets():
    assert RESOLUTION_MAX_SIDE == {"low": 500, "medium": 1536, "high": 3072}


@pytest.mark.parametrize("size", [(4000, 3000), (4032, 3024), (3000, 4000)])
def test_default_tier_decodes_a_12_mp_jpeg_at_one_eighth_scale(tmp_path, monkeypatch, size):
    # The reason "low" is 500 px: libjpeg's cheapest decode (1/8) already covers it for 12 MP photos.
    src = make_jpeg(tmp_path / "a.jpg", size=size)
    decoded = []
    real_load = JpegImageFile.load

    def spy(self):
        decoded.append(self.size)  # after draft(): the size libjpeg will decode at
        return real_load(self)

    monkeypatch.setattr(JpegImageFile, "load", spy)
    out = prepare_image(src)
    assert decoded[0] == (-(-size[0] // 8), -(-size[1] // 8))
    assert max(out.width, out.height) == RESOLUTION_MAX_SIDE["low"]


def test_large_jpeg_uses_draft_mode_and_lands_on_the_target_size(large_jpeg, monkeypatch):
    calls = []
    real_draft = JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        calls.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    out = prepare_image(large_jpeg, max_side=768)
    assert (out.width, out.height) == (768, 576)
    # libjpeg decoded at 1/4 scale (1000x750) instead of the full 4000x3000.
    assert calls == [((768, 576), (1000, 750))]
    assert_no_metadata(out.data)


def test_camera_jpeg_with_mp_index_is_prepared_like_jpeg(tmp_path):
    from tests.media_factory import build_exif

    src = tmp_path / "mpo.jpg"
    first = Image.new("RGB", (1600, 1200), (200, 50, 50))
    first.save(src, "MPO", save_all=True, append_images=[Image.new("RGB", (1600, 1200))], exif=build_exif().tobytes())
    assert Image.open(src).format == "MPO"
    out = prepare_image(src, max_side=400)
    assert (out.width, out.height, out.meta.format) == (400, 300, "JPEG")
    assert_no_metadata(out.data)
    assert b"MPF\x00" not in out.data


def test_large_jpeg_medium_resolution(large_jpeg):
    out = prepare_image(large_jpeg, max_side=RESOLUTION_MAX_SIDE["medium"])
    assert (out.width, out.height) == (1536, 1152)
    assert out.meta.width == 4000 and out.meta.height == 3000


# --------------------------------------------------------------------------------------------------
# pixel modes


def test_transparency_is_composited_on_white(tmp_path):
    out = prepare_image(make_png(tmp_path / "a.png", size=(200, 100), alpha=True))
    img = Image.open(io.BytesIO(out.data)).convert("RGB")
    assert img.mode == "RGB"
    assert close(img.getpixel((20, 80)), (255, 255, 255), tol=6)  # transparent left half
    assert close(img.getpixel((180, 80)), BACKGROUND)


def test_gif_uses_the_first_frame(tmp_path):
    out = prepare_image(make_gif(tmp_path / "a.gif", colors=((0, 160, 0), (0, 0, 255))))
    img = Image.open(io.BytesIO(out.data)).convert("RGB")
    assert close(img.getpixel((img.width - 3, img.height - 3)), (0, 160, 0))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1", "RGBA"])
def test_unusual_png_modes_become_rgb_jpeg(tmp_path, mode):
    out = prepare_image(make_png(tmp_path / "a.png", size=(120, 80), mode=mode), max_side=60)
    img = Image.open(io.BytesIO(out.data))
    assert img.mode == "RGB" and img.size == (60, 40)
    if mode in ("L", "LA"):
        r, g, b = img.getpixel((55, 35))
        assert max(r, g, b) < 200


def test_palette_png_with_transparent_index_is_composited_on_white(tmp_path):
    img = Image.new("P", (100, 50), 0)
    img.putpalette([0, 0, 0, 200, 30, 30] + [0, 0, 0] * 254)
    img.paste(1, (50, 0, 100, 50))
    img.save(tmp_path / "p.png", transparency=0)
    out = Image.open(io.BytesIO(prepare_image(tmp_path / "p.png").data)).convert("RGB")
    assert close(out.getpixel((10, 25)), (255, 255, 255), tol=6)
    assert close(out.getpixel((90, 25)), (200, 30, 30))


def test_16_bit_grayscale_png_is_scaled_not_clipped_to_white(tmp_path):
    gradient = Image.linear_gradient("L").resize((200, 100)).convert("I").point(lambda v: v * 257)
    gradient.convert("I;16").save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    out = prepare_image(tmp_path / "g16.png", max_side=100)
    img = Image.open(io.BytesIO(out.data)).convert("L")
    assert img.getpixel((50, 2)) < 20  # top of the gradient is black
    assert 100 < img.getpixel((50, 25)) < 160  # mid-gray in the middle
    assert img.getpixel((50, 48)) > 230


def test_cmyk_and_grayscale_jpegs_are_converted(tmp_path):
    for mode in ("CMYK", "L"):
        out = prepare_image(make_jpeg(tmp_path / f"{mode}.jpg", size=(200, 100), mode=mode), max_side=100)
        assert Image.open(io.BytesIO(out.data)).mode == "RGB"
        assert (out.width, out.height) == (100, 50)


def test_wide_gamut_icc_pixels_are_converted_to_srgb_before_the_profile_is_dropped(tmp_path):
    src = make_jpeg(tmp_path / "p3.jpg", size=(64, 64), color=(200, 100, 50), icc=display_p3_icc(), quality=100)
    out = prepare_image(src)
    assert_no_metadata(out.data)
    pixel = Image.open(io.BytesIO(out.data)).convert("RGB").getpixel((60, 60))
    assert close(pixel, (216, 93, 24), tol=8)  # what P3 (200, 100, 50) is in sRGB
    assert abs(pixel[0] - 200) > 8


def test_broken_icc_profile_is_ignored(tmp_path):
    src = make_jpeg(tmp_path / "a.jpg", size=(64, 64), icc=b"not really an icc profile" * 4)
    out = prepare_image(src)
    assert_no_metadata(out.data)
    assert (out.width, out.height) == (64, 64)


# --------------------------------------------------------------------------------------------------
# bad input


def test_bomb_is_rejected_from_the_header_without_decoding(tmp_path, monkeypatch):
    bomb = make_png_bomb(tmp_path / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 5_000

    def no_decode(self, *a, **k):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    for call in (prepare_image, read_image_meta):
        with pytest.raises(MediaError) as err:
            call(bomb)
        assert err.value.kind == "too_large"
        assert str(err.value) == "image is 30000x30000 (900 MP), over the 120 MP limit"


def test_pillow_decompression_bomb_error_is_a_media_error_too(tmp_path):
    # With our own limit raised, Pillow's own guard (2x MAX_IMAGE_PIXELS) trips on open: still too_large.
    bomb = make_png_bomb(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(MediaError) as err:
        prepare_image(bomb, max_pixels=10**12)
    assert err.value.kind == "too_large"
    assert "30000x30000" in str(err.value)


def test_max_pixels_applies_to_ordinary_images(tmp_path):
    with pytest.raises(MediaError) as err:
        prepare_image(make_jpeg(tmp_path / "a.jpg", size=(640, 480)), max_pixels=100_000)
    assert err.value.kind == "too_large"
    assert str(err.value) == "image is 640x480 (0.3 MP), over the 0.1 MP limit"


def test_truncated_jpeg_is_a_truncated_error(tmp_path):
    with pytest.raises(MediaError) as err:
        prepare_image(make_truncated_jpeg(tmp_path / "t.jpg"))
    assert err.value.kind == "truncated"
    assert str(err.value).startswith("truncated or corrupt image data: ")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_a_truncated_error(tmp_path):
    src = make_png(tmp_path / "a.png", size=(300, 300))
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as err:
        prepare_image(src)
    assert err.value.kind == "truncated"


def test_text_named_png_is_corrupt_with_a_readable_message(tmp_path):
    with pytest.raises(MediaError) as err:
        prepare_image(make_text_as_png(tmp_path / "fake.png"))
    assert err.value.kind == "corrupt"
    assert str(err.value) == "not an image: content is plain text"


def test_garbage_is_corrupt(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(MediaError) as err:
        prepare_image(path)
    assert err.value.kind == "corrupt"


def test_jpeg_header_only_is_corrupt(tmp_path):
    path = tmp_path / "stub.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01")
    with pytest.raises(MediaError) as err:
        prepare_image(path)
    assert err.value.kind in ("corrupt", "truncated")


def test_unsupported_format_is_named_plainly(tmp_path):
    # TIFF is decoded now (tests/test_formats.py); Photoshop's large-document format is not.
    path = tmp_path / "poster.psb"
    path.write_bytes(b"8BPS\x00\x02" + bytes(6) + b"\x00\x03" + (64).to_bytes(4, "big") * 2 + bytes(64))
    with pytest.raises(MediaError) as err:
        prepare_image(path)
    assert err.value.kind == "unsupported"
    assert "PSB" in str(err.value)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(MediaError) as err:
        prepare_image(make_zero_byte(tmp_path / "e.jpg"))
    assert (err.value.kind, str(err.value)) == ("empty", "empty file (0 bytes)")
    with pytest.raises(MediaError) as err:
        prepare_image(tmp_path / "missing.jpg")
    assert err.value.kind == "unreadable"


def test_photo_library_outcomes_for_image_prep(tmp_path):
    expected = make_photo_library(tmp_path)
    for rel, want in expected.items():
        path = tmp_path / rel
        if want in ("skipped", "symlink_loop", "empty", "mislabelled"):
            continue  # decided by discovery
        try:
            out = prepare_image(path)
            got = "ok"
            assert_no_metadata(out.data)
        except MediaError as exc:
            got = exc.kind
        assert got == want, rel


# --------------------------------------------------------------------------------------------------
# process pool


def test_prepare_image_is_picklable_and_runs_in_a_process_pool(tmp_path):
    src = make_jpeg(tmp_path / "a.jpg", orientation=6)
    assert pickle.loads(pickle.dumps(prepare_image)) is prepare_image
    with ProcessPoolExecutor(max_workers=1) as pool:
        out = pool.submit(prepare_image, str(src), max_side=320).result(timeout=60)
    assert isinstance(out, PreparedImage)
    assert (out.width, out.height) == (240, 320)
    pickle.loads(pickle.dumps(out))
