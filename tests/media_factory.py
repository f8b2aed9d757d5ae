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
    "OWNER",
    "DEVICE",
    "LOCATION_ISO6709",
    "GPS_TEXT",
    "PERSONAL_STRINGS",
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

# Personal metadata that audio, video and PDF fixtures carry with `personal=True`; none of these strings may
# reach an upload unless the user keeps metadata (the photo fixtures above carry CAMERA_SERIAL and the GPS).
OWNER = "Alice Example"
DEVICE = "Pixel 7 Pro"
LOCATION_ISO6709 = "+48.8584+002.2945/"
GPS_TEXT = "GPS 48.8584,2.2945"
PERSONAL_STRINGS = (OWNER, DEVICE, "48.8584", CAMERA_SERIAL)

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


def in_a_run(expected: dict[str, str]) -> dict[str, str]:
    """The files of `make_photo_library` that get a row in a run (hidden files are left out by default)."""
    return {k: v for k, v in expected.items() if v != "hidden"}


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
    expected[".DS_Store"] = "hidden"  # discovery: a skipped companion; a run leaves hidden files out (no row)

    link = make_symlink_loop(root)
    make_jpeg(link.parent / "inside.jpg", size=(320, 240))
    expected["loop/inside.jpg"] = "ok"
    expected["loop/self"] = "symlink_loop"
    return expected


# ---------------------------------------------------------------------------------------------------------
# Audio, video and documents. No encoder is installed, so the compressed formats are hand-built: valid
# containers whose headers state the duration (what enrich and the emulator read), with silent payloads.

__all__ += [
    "make_wav", "make_mp3", "make_flac", "make_ogg_opus", "make_m4a", "make_mp4", "make_webm",
    "make_pdf", "make_encrypted_pdf", "make_truncated_pdf", "make_text", "make_mixed_library",
]


def make_wav(path: str | os.PathLike[str], seconds: float, *, rate: int = 8000, sampwidth: int = 1,
             channels: int = 1, tone_hz: float | None = 440.0, personal: bool = False) -> Path:
    """A PCM WAV (stdlib `wave`): a short tone, then silence. 8 kHz mono 8-bit by default: 8 KB a second.
    `personal=True` appends a LIST/INFO chunk (artist, software, a GPS comment, a serial) after the data."""
    import math
    import wave

    path = Path(path)
    frames = int(round(seconds * rate))
    silence = (b"\x80" if sampwidth == 1 else b"\x00" * sampwidth) * channels
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        tone = min(frames, rate // 4) if tone_hz else 0
        if tone:
            out = bytearray()
            for i in range(tone):
                v = math.sin(2 * math.pi * tone_hz * i / rate)
                sample = (int(128 + 60 * v).to_bytes(1, "little") if sampwidth == 1
                          else int(12000 * v).to_bytes(sampwidth, "little", signed=True))
                out += sample * channels
            w.writeframes(bytes(out))
        left = frames - tone
        block = silence * 65536
        while left > 0:
            n = min(left, 65536)
            w.writeframes(block[: n * len(silence)])
            left -= n
    if personal:
        _append_riff_chunks(path, [_riff_list_info({b"IART": OWNER, b"ISFT": DEVICE, b"ICMT": GPS_TEXT,
                                                    b"ISRF": CAMERA_SERIAL})])
    return path


def _riff_list_info(fields: dict[bytes, str]) -> bytes:
    body = b"INFO"
    for ident, text in fields.items():
        value = text.encode() + b"\x00"
        body += ident + struct.pack("<I", len(value)) + value + (b"\x00" if len(value) & 1 else b"")
    return b"LIST" + struct.pack("<I", len(body)) + body


def _append_riff_chunks(path: Path, chunks: list[bytes]) -> None:
    """Append whole chunks (id, size, body) after the data chunk and fix the RIFF size."""
    with open(path, "r+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() & 1:
            fh.write(b"\x00")
        for chunk in chunks:
            fh.write(chunk)
        end = fh.tell()
        fh.seek(4)
        fh.write(struct.pack("<I", end - 8))


# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, mono, no CRC: 417-byte frames of 1152 samples
_MP3_HEADER = b"\xff\xfb\x90\xc4"
_MP3_FRAME = _MP3_HEADER + bytes(417 - 4)  # zero side info: a silent, decodable frame
MP3_FRAME_SECONDS = 1152 / 44100


def make_mp3(path: str | os.PathLike[str], seconds: float, *, id3: bool = True, personal: bool = False) -> Path:
    """Silent MPEG-1 Layer III frames (no encoder needed), with an ID3v2.4 title tag by default.
    `personal=True`: ID3v2 artist (TPE1), encoder device (TSSE) and a TXXX GPS frame in front, an ID3v1 tag
    and an APEv2 tag (with the serial) at the end, as taggers and phone recorders write them."""
    path = Path(path)
    frames = max(1, round(seconds / MP3_FRAME_SECONDS))
    data = b""
    if id3 or personal:
        body = _id3_text_frame(b"TIT2", "test recording")
        if personal:
            body += _id3_text_frame(b"TPE1", OWNER) + _id3_text_frame(b"TSSE", DEVICE)
            body += _id3_text_frame(b"TXXX", "location\x00" + GPS_TEXT)
        data = b"ID3\x04\x00\x00" + bytes(_syncsafe(len(body))) + body
    data += _MP3_FRAME * frames
    if personal:
        data += _ape_tag({"Serial": CAMERA_SERIAL, "Artist": OWNER})
        data += b"TAG" + b"test recording".ljust(30, b"\x00") + OWNER.encode().ljust(30, b"\x00") + bytes(64) + b"\xff"
    path.write_bytes(data)
    return path


def _id3_text_frame(ident: bytes, text: str) -> bytes:
    payload = b"\x03" + text.encode()  # encoding byte (UTF-8) + text
    return ident + bytes(_syncsafe(len(payload))) + b"\x00\x00" + payload


def _ape_tag(items: dict[str, str]) -> bytes:
    """An APEv2 tag with header and footer."""
    body = b"".join(struct.pack("<II", len(v.encode()), 0) + k.encode() + b"\x00" + v.encode()
                    for k, v in items.items())
    size = len(body) + 32

    def part(flags: int) -> bytes:
        return b"APETAGEX" + struct.pack("<IIII", 2000, size, len(items), flags) + bytes(8)

    return part(0xA0000000) + body + part(0x80000000)


def _syncsafe(n: int) -> list[int]:
    return [(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F]


def make_flac(path: str | os.PathLike[str], seconds: float, *, rate: int = 44100, channels: int = 2,
              personal: bool = False) -> Path:
    """A FLAC stream header (STREAMINFO with the total sample count) and stand-in frame bytes.
    `personal=True` adds a Vorbis comment (artist, encoder device, a GPS comment) and a PICTURE block."""
    path = Path(path)
    total = int(round(seconds * rate))
    bits = (4096 << 64) | (4096 << 48)  # min/max block size (16 bits each), min/max frame size 0 (24 each)
    tail = (rate << 44) | ((channels - 1) << 41) | (15 << 36) | total  # rate 20, ch 3, bps-1 5, samples 36
    info = bits.to_bytes(10, "big") + tail.to_bytes(8, "big") + bytes(16)
    blocks = [(0, info)]
    if personal:
        blocks.append((4, _vorbis_comment(b"reference libFLAC 1.4.3",
                                          [f"ARTIST={OWNER}", f"ENCODER={DEVICE}", f"COMMENT={GPS_TEXT}"])))
        desc = f"{OWNER} at home".encode()
        blocks.append((6, struct.pack(">II", 3, 10) + b"image/jpeg" + struct.pack(">I", len(desc)) + desc
                       + struct.pack(">IIIII", 1, 1, 24, 0, 4) + b"\xff\xd8\xff\xd9"))
    out = b"fLaC"
    for i, (kind, body) in enumerate(blocks):
        out += bytes([(0x80 if i == len(blocks) - 1 else 0) | kind]) + len(body).to_bytes(3, "big") + body
    path.write_bytes(out + b"\xff\xf8" + bytes(62))  # stand-in for the frames: copied, never read
    return path


def _vorbis_comment(vendor: bytes, comments: list[str]) -> bytes:
    out = struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(comments))
    for c in comments:
        out += struct.pack("<I", len(c.encode())) + c.encode()
    return out


def make_ogg_opus(path: str | os.PathLike[str], seconds: float, *, pre_skip: int = 312,
                  personal: bool = False) -> Path:
    """Ogg Opus: OpusHead, OpusTags and one page of silent packets whose granule position ends the stream.
    `personal=True` fills OpusTags with an artist, the recording device and a location comment."""
    from mutagen.ogg import OggPage

    path = Path(path)
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, 48000, 0, 0)
    comments = [f"ARTIST={OWNER}", f"ENCODER={DEVICE}", f"LOCATION={GPS_TEXT}"] if personal else []
    tags = b"OpusTags" + _vorbis_comment(b"enrich-tests", comments)
    pages = []
    for seq, (packets, position) in enumerate(
            [([head], 0), ([tags], 0), ([b"\xf8\xff\xfe"] * 8, pre_skip + int(round(seconds * 48000)))]):
        page = OggPage()
        page.serial = 0x454E5249
        page.sequence = seq
        page.position = position
        page.packets = packets
        page.first = seq == 0
        page.last = seq == 2
        pages.append(page.write())
    path.write_bytes(b"".join(pages))
    return path


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


MP4_CREATED = 3_772_189_845  # 2023-07-14 15:30:45 UTC in seconds since 1904 (the MP4 epoch)


def _mp4(seconds: float, handler: bytes, major: bytes, compatible: bytes, timescale: int = 1000,
         personal: bool = False) -> bytes:
    duration = int(round(seconds * timescale))
    created = MP4_CREATED if personal else 0
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = _box(b"mvhd", bytes(4) + struct.pack(">IIII", created, created, timescale, duration)
                + struct.pack(">IH", 0x10000, 0x100) + bytes(10) + matrix + bytes(24) + struct.pack(">I", 2))
    tkhd = _box(b"tkhd", b"\x00\x00\x00\x03" + struct.pack(">IIII", created, created, 1, 0)
                + struct.pack(">I", duration) + bytes(8) + struct.pack(">hhhH", 0, 0, 0, 0) + matrix
                + struct.pack(">II", 320 << 16, 240 << 16))
    mdhd = _box(b"mdhd", bytes(4) + struct.pack(">IIII", created, created, timescale, duration)
                + struct.pack(">HH", 0x55C4, 0))
    hdlr = _box(b"hdlr", bytes(4) + bytes(4) + handler + bytes(12) + b"enrich\x00")
    trak_extra = _box(b"udta", _box(b"name", DEVICE.encode())) if personal else b""
    trak = _box(b"trak", tkhd + _box(b"mdia", mdhd + hdlr) + trak_extra)
    ftyp = _box(b"ftyp", major + struct.pack(">I", 0x200) + compatible)
    moov_extra = top_extra = b""
    mdat = bytes(64)
    if personal:
        moov_extra = _mp4_personal_udta() + _mp4_apple_meta()
        top_extra = _box(b"uuid", bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC") + XMP_PACKET)
        top_extra += _box(b"free", b"old tag: " + OWNER.encode())  # leftovers an editor did not zero
        # a GoPro-style GPS track: two chunks of samples in mdat, between stand-in video bytes
        samples = [f"GPS5 {GPS_TEXT} t={i}".encode() for i in range(3)]
        layout = [MP4_VIDEO_FILLER, samples[0] + samples[1], MP4_VIDEO_FILLER[:16], samples[2]]
        mdat = b"".join(layout)
        head = len(ftyp) + len(_box(b"moov", mvhd + trak + _gps_trak(samples, [0, 0]) + moov_extra)) + len(top_extra)
        start = head + 8
        offsets = [start + len(layout[0]), start + len(layout[0]) + len(layout[1]) + len(layout[2])]
        moov_extra = _gps_trak(samples, offsets) + moov_extra
    return ftyp + _box(b"moov", mvhd + trak + moov_extra) + top_extra + _box(b"mdat", mdat)


MP4_VIDEO_FILLER = b"\x11" * 64  # stand-in for video frames next to the GPS samples: must survive stripping


def _gps_trak(samples: list[bytes], chunk_offsets: list[int]) -> bytes:
    """A timed metadata track (handler `meta`, like GoPro's GPMF): samples 1-2 in chunk 1, sample 3 in chunk 2."""
    tkhd = _box(b"tkhd", b"\x00\x00\x00\x03" + bytes(80))
    mdhd = _box(b"mdhd", bytes(4) + struct.pack(">IIII", 0, 0, 1000, 3000) + struct.pack(">HH", 0x55C4, 0))
    hdlr = _box(b"hdlr", bytes(4) + bytes(4) + b"meta" + bytes(12) + b"GoPro MET\x00")
    stsd = _box(b"stsd", bytes(4) + struct.pack(">I", 1) + _box(b"gpmd", bytes(6) + struct.pack(">H", 1)))
    stts = _box(b"stts", bytes(4) + struct.pack(">III", 1, 3, 1000))
    stsc = _box(b"stsc", bytes(4) + struct.pack(">IIIIIII", 2, 1, 2, 1, 2, 1, 1))
    stsz = _box(b"stsz", bytes(4) + struct.pack(">II", 0, len(samples)) + b"".join(struct.pack(">I", len(x)) for x in samples))
    stco = _box(b"stco", bytes(4) + struct.pack(">I", len(chunk_offsets)) + b"".join(struct.pack(">I", o) for o in chunk_offsets))
    stbl = _box(b"stbl", stsd + stts + stsc + stsz + stco)
    return _box(b"trak", tkhd + _box(b"mdia", mdhd + hdlr + _box(b"minf", stbl)))


def _qt_text(kind: bytes, text: str) -> bytes:
    """A QuickTime user-data text atom (16-bit length, 16-bit language, text), as Android writes ©xyz."""
    data = text.encode()
    return _box(kind, struct.pack(">HH", len(data), 0x15C7) + data)


def _ilst_item(kind: bytes, text: str) -> bytes:
    return _box(kind, _box(b"data", struct.pack(">II", 1, 0) + text.encode()))


def _mp4_personal_udta() -> bytes:
    """moov/udta: the location, make and model a phone writes, and iTunes-style tags (©too, ©ART)."""
    ilst = _box(b"ilst", _ilst_item(b"\xa9too", DEVICE) + _ilst_item(b"\xa9ART", OWNER)
                + _ilst_item(b"\xa9day", "2023-07-14T15:30:45Z"))
    meta = _box(b"meta", bytes(4) + _box(b"hdlr", bytes(8) + b"mdir" + b"appl" + bytes(9)) + ilst)
    return _box(b"udta", _qt_text(b"\xa9xyz", LOCATION_ISO6709) + _qt_text(b"\xa9mak", "Google")
                + _qt_text(b"\xa9mod", DEVICE) + meta)


def _mp4_apple_meta() -> bytes:
    """moov/meta with `mdta` keys, as an iPhone stores its location, model and serial."""
    keys = [b"com.apple.quicktime.location.ISO6709", b"com.apple.quicktime.model",
            b"com.apple.quicktime.camera.identifier"]
    values = [LOCATION_ISO6709, DEVICE, CAMERA_SERIAL]
    keys_box = _box(b"keys", bytes(4) + struct.pack(">I", len(keys))
                    + b"".join(struct.pack(">I", 8 + len(k)) + b"mdta" + k for k in keys))
    ilst = _box(b"ilst", b"".join(_box(struct.pack(">I", i + 1), _box(b"data", struct.pack(">II", 1, 0) + v.encode()))
                                  for i, v in enumerate(values)))
    return _box(b"meta", _box(b"hdlr", bytes(8) + b"mdta" + bytes(12)) + keys_box + ilst)


def make_mp4(path: str | os.PathLike[str], seconds: float, *, quicktime: bool = False,
             personal: bool = False) -> Path:
    """A minimal MP4 (or QuickTime .mov) whose header (mvhd, one video track) states `seconds`; no frames.
    `personal=True`: a phone's moov/udta (©xyz location, ©mak/©mod, iTunes ©too/©ART/©day), an iPhone-style
    moov/meta with mdta keys, a track name, a top-level XMP uuid box, a `free` box with leftover text,
    creation/modification times in mvhd/tkhd/mdhd, and a GoPro-style GPS track whose samples lie in mdat
    next to stand-in video bytes (`MP4_VIDEO_FILLER`)."""
    path = Path(path)
    if quicktime:
        path.write_bytes(_mp4(seconds, b"vide", b"qt  ", b"qt  ", personal=personal))
    else:
        path.write_bytes(_mp4(seconds, b"vide", b"isom", b"isomiso2mp41", personal=personal))
    return path


def make_m4a(path: str | os.PathLike[str], seconds: float, *, personal: bool = False) -> Path:
    """A minimal M4A: one sound track whose media header (mdhd) states `seconds` (`personal`: see make_mp4)."""
    path = Path(path)
    path.write_bytes(_mp4(seconds, b"soun", b"M4A ", b"M4A mp42isom", timescale=44100, personal=personal))
    return path


def _ebml(ident: bytes, payload: bytes) -> bytes:
    return ident + (b"\x01" + len(payload).to_bytes(7, "big")) + payload


def make_webm(path: str | os.PathLike[str], seconds: float | None, *, timecode_scale: int = 1_000_000,
              personal: bool = False) -> Path:
    """A WebM (EBML header, Segment > Info with TimecodeScale and Duration, an empty Cluster).
    `seconds=None` leaves Duration out, like a live browser recording. `personal=True` adds a Title and
    DateUTC to Info, and a Tags element after the cluster (artist, location, device)."""
    path = Path(path)
    header = _ebml(b"\x1a\x45\xdf\xa3", _ebml(b"\x42\x86", b"\x01") + _ebml(b"\x42\x82", b"webm"))
    info = _ebml(b"\x2a\xd7\xb1", timecode_scale.to_bytes(3, "big"))
    if personal:
        info += _ebml(b"\x7b\xa9", f"{OWNER} on holiday".encode()) + _ebml(b"\x44\x61", struct.pack(">q", 742_700_000_000_000_000))
    if seconds is not None:
        info += _ebml(b"\x44\x89", struct.pack(">d", seconds * 1e9 / timecode_scale))
    info += _ebml(b"\x4d\x80", b"enrich-tests")
    segment = _ebml(b"\x15\x49\xa9\x66", info) + _ebml(b"\x1f\x43\xb6\x75", _ebml(b"\xe7", b"\x00"))
    if personal:
        simple = b"".join(_ebml(b"\x67\xc8", _ebml(b"\x45\xa3", k.encode()) + _ebml(b"\x44\x87", v.encode()))
                          for k, v in (("ARTIST", OWNER), ("LOCATION", LOCATION_ISO6709), ("ENCODER", DEVICE)))
        segment += _ebml(b"\x12\x54\xc3\x67", _ebml(b"\x73\x73", _ebml(b"\x63\xc0", b"") + simple))
    path.write_bytes(header + b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" + segment)  # unknown size
    return path


def make_pdf(path: str | os.PathLike[str], pages: int = 1, *, title: str | None = "Test document",
             personal: bool = False) -> Path:
    """A PDF of `pages` blank US-letter pages (pypdf). `personal=True`: /Author, /Creator (a scanner app on
    a phone) in the information dictionary, an XMP stream on the catalog and one on the first page, and an
    incremental update that changed the author (the first author stays in the earlier revision's bytes)."""
    from pypdf import PdfWriter
    from pypdf.generic import NameObject, StreamObject

    path = Path(path)
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    if title:
        writer.add_metadata({"/Title": title})
    if personal:
        writer.add_metadata({"/Author": OWNER, "/Creator": f"{DEVICE} Scanner"})
        for holder in (writer._root_object, writer.pages[0]):
            xmp = StreamObject()
            xmp.set_data(XMP_PACKET)
            xmp.update({NameObject("/Type"): NameObject("/Metadata"), NameObject("/Subtype"): NameObject("/XML")})
            holder[NameObject("/Metadata")] = writer._add_object(xmp)
    with open(path, "wb") as fh:
        writer.write(fh)
    if personal:
        update = PdfWriter(path, incremental=True)
        update.add_metadata({"/Author": "A. Example"})
        with open(path, "wb") as fh:
            update.write(fh)
    return path


def make_encrypted_pdf(path: str | os.PathLike[str], pages: int = 2, *, password: str = "secret") -> Path:
    """A PDF that needs a user password to open (RC4-128, so no crypto library is needed)."""
    from pypdf import PdfWriter

    path = Path(path)
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


def make_truncated_pdf(path: str | os.PathLike[str], pages: int = 3, keep: float = 0.6) -> Path:
    """A valid PDF cut part-way (an interrupted download): no xref table, no %%EOF."""
    path = Path(path)
    make_pdf(path, pages)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_text(path: str | os.PathLike[str], text: str | None = None, *, chars: int | None = None) -> Path:
    """A UTF-8 text file; `chars` repeats a sentence up to that many characters."""
    path = Path(path)
    if text is None:
        sentence = "Meeting notes, 14 July 2023: Alice and Bob planned the harbour trip to Marseille. "
        text = (sentence * (1 + (chars or 400) // len(sentence)))[: chars or 400]
    path.write_text(text, encoding="utf-8")
    return path


def make_mixed_library(directory: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """Photos, WAVs of 1 s to 10 min, an MP3, PDFs of 1-12 pages, an encrypted and a truncated PDF, text and
    Markdown, a short MP4 and WebM. Returns {relative path: (kind, outcome)}: outcome "ok" or an error_kind.
    About 5.2 MB in all (8 kHz 8-bit mono WAVs)."""
    root = Path(directory)
    for sub in ("photos", "audio", "docs", "video"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    expected: dict[str, tuple[str, str]] = {}

    def add(rel: str, kind: str, outcome: str = "ok") -> None:
        expected[rel] = (kind, outcome)

    make_jpeg(root / "photos" / "beach.jpg")
    add("photos/beach.jpg", "image")
    make_png(root / "photos" / "screenshot.png", color=(240, 240, 240))
    add("photos/screenshot.png", "image")
    for name, seconds in (("memo-1s.wav", 1), ("call-30s.wav", 30), ("lecture-10min.wav", 600)):
        make_wav(root / "audio" / name, seconds)
        add(f"audio/{name}", "audio")
    make_mp3(root / "audio" / "song.mp3", 12)
    add("audio/song.mp3", "audio")
    for name, pages in (("letter-1p.pdf", 1), ("form-3p.pdf", 3), ("report-12p.pdf", 12)):
        make_pdf(root / "docs" / name, pages)
        add(f"docs/{name}", "document")
    make_encrypted_pdf(root / "docs" / "locked.pdf")
    add("docs/locked.pdf", "document", "encrypted")
    make_truncated_pdf(root / "docs" / "cut-download.pdf")
    add("docs/cut-download.pdf", "document", "truncated")
    make_text(root / "docs" / "notes.txt", chars=1500)
    add("docs/notes.txt", "document")
    make_text(root / "docs" / "todo.md", "# To do\n\n- book the ferry\n- call the plumber\n")
    add("docs/todo.md", "document")
    make_mp4(root / "video" / "clip.mp4", 7.5)
    add("video/clip.mp4", "video")
    make_webm(root / "video" / "screen.webm", 4.2)
    add("video/screen.webm", "video")
    return expected


def make_raw_pdf(path: str | os.PathLike[str], objects: list[bytes]) -> Path:
    """A PDF built from raw object bodies (object 1 is the root), with a correct xref table: for the
    malformed-but-well-framed cases (page trees that loop, no pages, no root)."""
    path = Path(path)
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(out)
    return path


def make_cyclic_pdf(path: str | os.PathLike[str]) -> Path:
    """A PDF whose page tree points back at itself (a naive reader loops forever)."""
    return make_raw_pdf(path, [b"<< /Type /Catalog /Pages 2 0 R >>",
                               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                               b"<< /Type /Pages /Kids [2 0 R] /Count 1 /Parent 2 0 R >>"])


__all__ += ["make_raw_pdf", "make_cyclic_pdf"]
