"""Small deterministic media fixtures for tests and benchmarks.

Every `make_*` function writes one file and returns its `Path`. Photos carry the kind of personal
metadata the pipeline must strip before upload: EXIF GPS, DateTimeOriginal, Make/Model,
BodySerialNumber, plus an XMP packet (with GPS), an ICC profile and a JPEG comment.

The orientation fixtures draw an upright picture with a red square in the top-left corner and store
it rotated/flipped the way a camera would, so that applying the EXIF orientation must bring the red
square back to the top-left (`MARKER_COLOR`, `BACKGROUND`).

`make_photo_library(dir)` writes one good file of every supported image format plus the bad cases,
and returns {relative path: expected outcome}: "ok", "skipped", or the expected error_kind.
"""
from __future__ import annotations

import io
import os
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageCms, ImageDraw, ExifTags
from PIL.TiffImagePlugin import IFDRational

try:
    import pillow_heif

    pillow_heif.register_heif_opener()
except Exception:  # pragma: no cover
    pillow_heif = None

__all__ = [
    "BACKGROUND",
    "MARKER_COLOR",
    "DEFAULT_GPS",
    "TAKEN_AT",
    "CAMERA_MAKE",
    "CAMERA_MODEL",
    "CAMERA_SERIAL",
    "XMP_PACKET",
    "COMMENT",
    "build_exif",
    "make_jpeg",
    "make_png",
    "make_webp",
    "make_gif",
    "make_heic",
    "make_avif",
    "make_truncated_jpeg",
    "make_png_bomb",
    "make_text_as_png",
    "make_zero_byte",
    "make_symlink_loop",
    "make_large_jpeg",
    "make_photo_library",
    "avif_supported",
    "display_p3_icc",
]

BACKGROUND = (40, 120, 200)
MARKER_COLOR = (255, 0, 0)
DEFAULT_GPS = (48.858222, 2.2945)  # 48°51'29.6"N 2°17'40.2"E
TAKEN_AT = "2023:07:14 15:30:45"
CAMERA_MAKE = "TestCam"
CAMERA_MODEL = "TC-1000 Mk II"
CAMERA_SERIAL = "SN-0042-1337"
COMMENT = b"shot by Alice Example at home"
XMP_PACKET = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.49N"'
    b' exif:GPSLongitude="2,17.67E"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)

# Orientation tag -> how to turn the upright picture into the stored pixels (inverse of the fix).
_STORE_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def display_p3_icc() -> bytes:
    """A minimal ICC v2 matrix/TRC profile with Display P3 primaries (what iPhones tag photos with).

    Hand-built because littlecms via Pillow only creates sRGB/LAB/XYZ profiles.
    """

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    text = b"Display P3 (test)"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text) + 1) + text + b"\x00"
    desc += bytes(4) + bytes(4) + bytes(2) + bytes(1) + bytes(67)  # no unicode / scriptcode text
    curve = b"curv" + bytes(4) + struct.pack(">I", 1) + struct.pack(">H", 0x0233) + bytes(2)  # gamma 2.2
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.964203, 1.0, 0.824905)),
        (b"rXYZ", xyz(0.515121, 0.241196, -0.001053)),
        (b"gXYZ", xyz(0.291977, 0.692245, 0.041885)),
        (b"bXYZ", xyz(0.157104, 0.066574, 0.784073)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
    header += bytes(12) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8) + struct.pack(">I", 0)
    header += s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(4) + bytes(16) + bytes(28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    value = abs(value)
    deg = int(value)
    minutes_f = (value - deg) * 60
    minutes = int(minutes_f)
    seconds = round((minutes_f - minutes) * 60, 4)
    return IFDRational(deg, 1), IFDRational(minutes, 1), IFDRational(round(seconds * 10000), 10000)


def build_exif(
    *,
    gps: tuple[float, float] | None = DEFAULT_GPS,
    orientation: int | None = None,
    taken_at: str | None = TAKEN_AT,
    offset_time: str | None = None,
    make: str | None = CAMERA_MAKE,
    model: str | None = CAMERA_MODEL,
    serial: str | None = CAMERA_SERIAL,
) -> Image.Exif:
    exif = Image.Exif()
    if make:
        exif[ExifTags.Base.Make] = make
    if model:
        exif[ExifTags.Base.Model] = model
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    if taken_at:
        exif[ExifTags.Base.DateTime] = taken_at
    sub: dict[int, object] = {}
    if taken_at:
        sub[ExifTags.Base.DateTimeOriginal] = taken_at
    if offset_time:
        sub[ExifTags.Base.OffsetTimeOriginal] = offset_time
    if serial:
        sub[ExifTags.Base.BodySerialNumber] = serial
    if sub:
        exif[ExifTags.IFD.Exif] = sub
    if gps is not None:
        lat, lon = gps
        exif[ExifTags.IFD.GPSInfo] = {
            ExifTags.GPS.GPSLatitudeRef: "N" if lat >= 0 else "S",
            ExifTags.GPS.GPSLatitude: _dms(lat),
            ExifTags.GPS.GPSLongitudeRef: "E" if lon >= 0 else "W",
            ExifTags.GPS.GPSLongitude: _dms(lon),
        }
    return exif


def _gps_arg(exif_gps: bool | tuple[float, float]) -> tuple[float, float] | None:
    if exif_gps is True:
        return DEFAULT_GPS
    if not exif_gps:
        return None
    return exif_gps  # type: ignore[return-value]


def _picture(size: tuple[int, int], color: tuple[int, int, int], orientation: int | None = None) -> Image.Image:
    """Stored pixels of `size` whose upright view has a red square in its top-left corner."""
    w, h = size
    upright_size = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    uw, uh = upright_size
    img = Image.new("RGB", upright_size, color)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, max(1, uw // 4) - 1, max(1, uh // 4) - 1), fill=MARKER_COLOR)
    # A little structure so the encoder has edges to work with.
    draw.ellipse((uw // 3, uh // 3, 2 * uw // 3, 2 * uh // 3), fill=(230, 230, 60))
    if orientation in _STORE_TRANSPOSE:
        img = img.transpose(_STORE_TRANSPOSE[orientation])
    assert img.size == (w, h)
    return img


def _noise(size: tuple[int, int], seed: int) -> Image.Image:
    w, h = size
    return Image.frombytes("L", size, random.Random(seed).randbytes(w * h))


def make_jpeg(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (640, 480),
    color: tuple[int, int, int] = BACKGROUND,
    exif_gps: bool | tuple[float, float] = True,
    orientation: int | None = None,
    *,
    taken_at: str | None = TAKEN_AT,
    offset_time: str | None = None,
    make: str | None = CAMERA_MAKE,
    model: str | None = CAMERA_MODEL,
    serial: str | None = CAMERA_SERIAL,
    xmp: bool = True,
    icc: bool | bytes = True,
    comment: bool = True,
    quality: int = 90,
    mode: str = "RGB",
) -> Path:
    """A JPEG with EXIF (GPS, DateTimeOriginal, Make/Model, BodySerialNumber), XMP, ICC and a comment.

    `size` is the stored pixel size; with orientation 5-8 the upright picture is `size` swapped.
    """
    path = Path(path)
    img = _picture(size, color, orientation)
    if mode != "RGB":
        img = img.convert(mode)
    exif = build_exif(
        gps=_gps_arg(exif_gps),
        orientation=orientation,
        taken_at=taken_at,
        offset_time=offset_time,
        make=make,
        model=model,
        serial=serial,
    )
    params: dict = {"quality": quality, "exif": exif.tobytes()}
    if xmp:
        params["xmp"] = XMP_PACKET
    if icc and mode == "RGB":
        params["icc_profile"] = icc if isinstance(icc, bytes) else _srgb_icc()
    if comment:
        params["comment"] = COMMENT
    img.save(path, "JPEG", **params)
    return path


def make_png(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (640, 480),
    color: tuple[int, int, int] = BACKGROUND,
    *,
    alpha: bool = False,
    exif_gps: bool | tuple[float, float] = True,
    mode: str | None = None,
) -> Path:
    """A PNG with an eXIf chunk (GPS) and a text chunk. `alpha=True`: left half fully transparent."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    img = _picture(size, color)
    if alpha:
        img = img.convert("RGBA")
        w, h = size
        mask = Image.new("L", size, 255)
        ImageDraw.Draw(mask).rectangle((0, 0, w // 2 - 1, h - 1), fill=0)
        img.putalpha(mask)
    if mode is not None:
        img = img.convert(mode)
    info = PngInfo()
    info.add_text("Comment", COMMENT.decode())
    params: dict = {"pnginfo": info}
    gps = _gps_arg(exif_gps)
    if gps is not None:
        params["exif"] = build_exif(gps=gps).tobytes()
    img.save(path, "PNG", **params)
    return path


def make_webp(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (640, 480),
    color: tuple[int, int, int] = BACKGROUND,
    *,
    exif_gps: bool | tuple[float, float] = True,
    orientation: int | None = None,
) -> Path:
    path = Path(path)
    img = _picture(size, color, orientation)
    exif = build_exif(gps=_gps_arg(exif_gps), orientation=orientation)
    img.save(path, "WEBP", quality=80, exif=exif.tobytes(), xmp=XMP_PACKET, icc_profile=_srgb_icc())
    return path


def make_gif(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (320, 240),
    colors: tuple[tuple[int, int, int], tuple[int, int, int]] = ((0, 160, 0), (0, 0, 255)),
) -> Path:
    """A 2-frame animated GIF; frame 0 is `colors[0]` (with the red marker), frame 1 `colors[1]`."""
    path = Path(path)
    first = _picture(size, colors[0])
    second = Image.new("RGB", size, colors[1])
    first.save(path, "GIF", save_all=True, append_images=[second], duration=200, loop=0, comment=COMMENT)
    return path


def make_heic(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (640, 480),
    color: tuple[int, int, int] = BACKGROUND,
    *,
    exif_gps: bool | tuple[float, float] = True,
    quality: int = 60,
) -> Path:
    if pillow_heif is None:  # pragma: no cover
        raise RuntimeError("pillow-heif is not installed")
    path = Path(path)
    img = _picture(size, color)
    exif = build_exif(gps=_gps_arg(exif_gps))
    img.save(path, "HEIF", quality=quality, exif=exif.tobytes(), xmp=XMP_PACKET)
    return path


def avif_supported() -> bool:
    try:
        from PIL import features

        return bool(features.check("avif"))
    except Exception:  # pragma: no cover
        return False


def make_avif(
    path: str | os.PathLike[str],
    size: tuple[int, int] = (320, 240),
    color: tuple[int, int, int] = BACKGROUND,
    *,
    exif_gps: bool | tuple[float, float] = True,
) -> Path:
    path = Path(path)
    img = _picture(size, color)
    exif = build_exif(gps=_gps_arg(exif_gps))
    img.save(path, "AVIF", quality=60, speed=10, exif=exif.tobytes())
    return path


def make_truncated_jpeg(
    path: str | os.PathLike[str], size: tuple[int, int] = (640, 480), keep: float = 0.5
) -> Path:
    """A JPEG whose scan data is cut: the header is intact, decoding fails part-way."""
    path = Path(path)
    img = Image.blend(_picture(size, BACKGROUND), _noise(size, seed=7).convert("RGB"), 0.3)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=build_exif().tobytes())
    data = buf.getvalue()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def make_png_bomb(path: str | os.PathLike[str], width: int = 30000, height: int = 30000) -> Path:
    """A tiny PNG whose (valid, CRC-checked) IHDR claims `width` x `height` RGB pixels.

    Only the first rows of pixel data are present: decoding it would allocate width*height*3 bytes
    before noticing, so the guard must reject it from the header.
    """
    path = Path(path)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = (b"\x00" + b"\x00" * (3 * width)) * 4
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows, 9))
    data += _png_chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def make_text_as_png(path: str | os.PathLike[str], text: str = "this is not an image\n" * 20) -> Path:
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def make_zero_byte(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_symlink_loop(directory: str | os.PathLike[str], name: str = "loop") -> Path:
    """`directory/loop/self -> .` (a link back to its own folder). Returns the link path."""
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "self"
    os.symlink(".", link, target_is_directory=True)
    return link


def make_large_jpeg(
    path: str | os.PathLike[str], size: tuple[int, int] = (4000, 3000), *, seed: int = 1, quality: int = 90
) -> Path:
    """A 12 MP JPEG with photo-like content (gradients, shapes, sensor-like noise) for benchmarks.

    Deterministic for a given seed; about 3-6 MB, so decode time is realistic.
    """
    path = Path(path)
    w, h = size
    rng = random.Random(seed)
    red = Image.linear_gradient("L").resize(size, Image.Resampling.BILINEAR)
    green = Image.radial_gradient("L").resize(size, Image.Resampling.BILINEAR)
    blue = Image.linear_gradient("L").rotate(90).resize(size, Image.Resampling.BILINEAR)
    base = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(base)
    for _ in range(60):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(50, w // 3), y0 + rng.randrange(50, h // 3)
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    # Fine texture at half resolution, upsampled: more like real detail than per-pixel white noise.
    texture = _noise((w // 2, h // 2), seed).resize(size, Image.Resampling.BILINEAR)
    img = Image.blend(base, Image.merge("RGB", (texture, texture, texture)), 0.18)
    img.save(path, "JPEG", quality=quality, exif=build_exif(orientation=1).tobytes(), icc_profile=_srgb_icc())
    return path


def make_photo_library(directory: str | os.PathLike[str]) -> dict[str, str]:
    """One good file of every supported image format plus the bad cases.

    Returns {path relative to `directory` (with "/"): expected outcome}, where the outcome is "ok"
    (discovered as pending and prepared fine), "skipped", or the error_kind the pipeline must record
    (from discovery: empty, mislabelled, symlink_loop; from image prep: truncated, too_large).
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    make_jpeg(root / "photo.jpg")
    expected["photo.jpg"] = "ok"
    make_jpeg(root / "rotated.jpg", orientation=6)
    expected["rotated.jpg"] = "ok"
    make_png(root / "screenshot.png")
    expected["screenshot.png"] = "ok"
    make_png(root / "transparent.png", alpha=True)
    expected["transparent.png"] = "ok"
    make_gif(root / "animated.gif")
    expected["animated.gif"] = "ok"
    make_webp(root / "photo.webp")
    expected["photo.webp"] = "ok"
    make_heic(root / "photo.heic", size=(320, 240))
    expected["photo.heic"] = "ok"
    if avif_supported():
        make_avif(root / "photo.avif")
        expected["photo.avif"] = "ok"
    make_png(root / "png_named.jpg", exif_gps=False)  # content wins over the name
    expected["png_named.jpg"] = "ok"

    make_zero_byte(root / "empty.jpg")
    expected["empty.jpg"] = "empty"
    make_truncated_jpeg(root / "truncated.jpg")
    expected["truncated.jpg"] = "truncated"
    make_text_as_png(root / "not_really.png")
    expected["not_really.png"] = "mislabelled"
    make_png_bomb(root / "bomb.png", 30000, 30000)
    expected["bomb.png"] = "too_large"
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(range(256)) * 4)
    expected[".DS_Store"] = "skipped"

    link = make_symlink_loop(root)
    make_jpeg(link.parent / "inside.jpg", size=(320, 240))
    expected["loop/inside.jpg"] = "ok"
    expected["loop/self"] = "symlink_loop"
    return expected
