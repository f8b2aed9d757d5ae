"""Turn one image file into the bytes we upload: oriented, downscaled, re-encoded, metadata-free.

- `read_image_meta(path)`: header-only (no pixel decode) size/EXIF facts, for cost estimates.
- `prepare_image(path, max_side=...)`: decode (JPEG via DCT scaling / draft mode), apply the EXIF
  orientation, downscale so the long side <= `max_side` (never upscale), convert to 8-bit sRGB (16-bit and
  float scaled, CMYK and LAB through their ICC profile or LittleCMS), composite alpha on white and re-encode
  as JPEG q=85 with no EXIF/XMP/ICC/comments (unless the user opts in to keeping EXIF with
  `keep_metadata=True`).

Formats: every one Pillow decodes, told apart by content (tasks/sniff.py): JPEG, PNG, WebP, GIF, HEIC/HEIF,
AVIF, TIFF (the first page), BMP, PSD (the composite), TGA, JPEG 2000, ICO/ICNS/CUR (the largest size),
PPM/PGM/PBM/PFM, DDS, QOI, SGI, PCX, ... Camera RAW files are described from their largest embedded preview
JPEG (tasks/raw_preview.py), oriented by the RAW's own orientation tag, with the RAW's EXIF as metadata.

Bad input raises `MediaError` with `kind`:
`too_large` (over `max_pixels`, checked from the header before any decode), `truncated` (pixel data
ends early or is corrupt), `corrupt` (not decodable as an image at all), `unsupported` (an image
format we do not send), `raw_no_preview` (a RAW file without an embedded preview), `empty` (0 bytes),
`unreadable` (missing / permission denied).

Both functions are plain top-level functions: picklable, safe in a ProcessPoolExecutor.
Pillow's settings are left alone (LOAD_TRUNCATED_IMAGES stays False, MAX_IMAGE_PIXELS unchanged);
importing this module registers the HEIF opener and silences DecompressionBombWarning, since our
own `max_pixels` guard runs first.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pillow_heif
from PIL import Image, ImageCms, UnidentifiedImageError

from PIL import GifImagePlugin, JpegImagePlugin, MpoImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401

from enrich.schemas.vocab import ErrorKind, MediaKind
from enrich.errors import MediaError
from enrich.settings import RESOLUTION_MAX_SIDE, default
from enrich.tasks.sniff import RAW_FORMATS, RAW_MIMES

try:  # Pillow >= 11.2 ships AVIF when built with libavif
    from PIL import AvifImagePlugin  # noqa: F401
except ImportError:  # pragma: no cover
    pass

pillow_heif.register_heif_opener()
Image.init()  # every plugin: the formats below are opened by name

__all__ = [
    "ImageMeta",
    "PreparedImage",
    "RESOLUTION_MAX_SIDE",
    "DEFAULT_MAX_PIXELS",
    "JPEG_QUALITY",
    "SUPPORTED_FORMATS",
    "read_image_meta",
    "read_image_size",
    "uploaded_size",
    "prepare_image",
]

DEFAULT_MAX_PIXELS: int = default("max_image_pixels")
JPEG_QUALITY = 85

# Pillow format names we accept. MPO is how Pillow opens camera JPEGs with an MP (multi-picture)
# index; it decodes like JPEG. Opening with an explicit list also stops Pillow from guessing exotic
# formats (TGA has no magic number and "matches" random bytes).
# The other formats are opened only when the content sniffer names them (tasks/sniff.py), with that one
# format: TGA and a few others have no magic number and would "match" anything.
_BASE_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "HEIF", "AVIF")
_OPEN_FORMATS = [f for f in _BASE_FORMATS if f in Image.OPEN]
_JPEG_FORMATS = ("JPEG", "MPO")
# sniffed mime -> the Pillow formats that open it
_PILLOW_FORMATS: dict[str, tuple[str, ...]] = {
    "image/tiff": ("TIFF",), "image/bmp": ("BMP", "DIB"), "image/vnd.adobe.photoshop": ("PSD",),
    "image/x-tga": ("TGA",), "image/jp2": ("JPEG2000",), "image/x-jp2-codestream": ("JPEG2000",),
    "image/x-icon": ("ICO",), "image/x-cursor": ("CUR",), "image/icns": ("ICNS",),
    "image/x-portable-pixmap": ("PPM",), "image/x-portable-graymap": ("PPM",),
    "image/x-portable-bitmap": ("PPM",), "image/x-portable-anymap": ("PPM",),
    "image/x-portable-floatmap": ("PPM",), "image/x-pam": ("PPM",), "image/vnd.ms-dds": ("DDS",),
    "image/qoi": ("QOI",), "image/sgi": ("SGI",), "image/x-sun-raster": ("SUN",), "image/x-pcx": ("PCX",),
    "image/x-dcx": ("DCX",), "image/x-xbitmap": ("XBM",), "image/x-xpixmap": ("XPM",), "image/fits": ("FITS",),
    "image/x-blp": ("BLP",), "image/x-flic": ("FLI",), "image/x-msp": ("MSP",), "image/x-pil-im": ("IM",),
    "image/x-xvthumb": ("XVTHUMB",), "image/x-ftex": ("FTEX",), "image/x-gimp-gbr": ("GBR",),
}
SUPPORTED_FORMATS = tuple(dict.fromkeys([*_BASE_FORMATS, *(f for fs in _PILLOW_FORMATS.values() for f in fs)]))

# We enforce our own pixel limit before decoding; Pillow's warning between 89 and 178 MP is noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# EXIF tags
_ORIENTATION = 0x0112
_MAKE = 0x010F
_MODEL = 0x0110
_DATETIME = 0x0132
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_DATETIME_ORIGINAL = 0x9003
_DATETIME_DIGITIZED = 0x9004
_OFFSET_TIME = 0x9010
_OFFSET_TIME_ORIGINAL = 0x9011
_OFFSET_TIME_DIGITIZED = 0x9012

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_SRGB_PROFILE = None  # built lazily, once per process


@dataclass(frozen=True, slots=True)
class ImageMeta:
    width: int  # after EXIF orientation
    height: int
    taken_at: datetime | None  # EXIF DateTimeOriginal; tz-aware only when OffsetTimeOriginal is set
    gps_lat: float | None  # decimal degrees, south negative
    gps_lon: float | None  # decimal degrees, west negative
    camera_make: str | None
    camera_model: str | None
    format: str  # JPEG/PNG/WEBP/GIF/HEIF/AVIF (MPO is reported as JPEG)


@dataclass(frozen=True, slots=True)
class PreparedImage:
    mime: str  # always "image/jpeg"
    data: bytes  # no EXIF/XMP/ICC/comments unless keep_metadata=True (then EXIF only)
    width: int  # of the uploaded bytes
    height: int
    meta: ImageMeta


# --------------------------------------------------------------------------------------------------
# opening and guards


def _sniffed_mime(path: str) -> str | None:
    """The image mime tasks/sniff.py gives this file's content, or None."""
    from enrich.tasks.sniff import SNIFF_BYTES, refine_tiff, sniff, sniff_with_decoder

    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return None
    found = sniff(head, ext) or (sniff_with_decoder(path, ext) if ext else None)
    return refine_tiff(path, found[1]) if found is not None and found[0] == MediaKind.IMAGE else None


def _formats_for(mime: str | None) -> list[str]:
    if mime is None:
        return _OPEN_FORMATS
    if mime in _PILLOW_FORMATS:
        return [f for f in _PILLOW_FORMATS[mime] if f in Image.OPEN]
    if mime.startswith("image/x-") and mime[8:].upper() in Image.OPEN:  # sniff_with_decoder's names
        return [mime[8:].upper()]
    return _OPEN_FORMATS


def _open(path: str | os.PathLike[str], max_pixels: int, mime: str | None = None) -> Image.Image:
    """Open lazily (header only), enforce the pixel limit; every failure is a MediaError."""
    path = os.fspath(path)
    _open_checks(path)
    try:
        img = Image.open(path, formats=_formats_for(mime or _sniffed_mime(path)))
    except Image.DecompressionBombError as exc:
        raise _too_large_from_bomb(path, exc, max_pixels) from None
    except UnidentifiedImageError:
        raise _unidentified(path) from None
    except PermissionError as exc:
        raise MediaError(f"cannot read file: {exc.strerror or exc}", kind=ErrorKind.UNREADABLE) from None
    except IsADirectoryError:
        raise MediaError("not a file: is a directory", kind=ErrorKind.UNREADABLE) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, RuntimeError) as exc:
        raise MediaError(f"corrupt image header: {exc}", kind=ErrorKind.CORRUPT) from None
    try:
        _check_pixels(img.size, max_pixels)
    except MediaError:
        img.close()
        raise
    return img


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise MediaError(f"image has an invalid size {w}x{h}", kind=ErrorKind.CORRUPT)
    if w * h > max_pixels:
        raise MediaError(_too_large_message(w, h, max_pixels), kind=ErrorKind.TOO_LARGE)


def _mp(pixels: int) -> str:
    mp = pixels / 1_000_000
    return f"{mp:.0f}" if mp >= 10 else f"{mp:.1f}".rstrip("0").rstrip(".")


def _too_large_message(w: int, h: int, max_pixels: int) -> str:
    return f"image is {w}x{h} ({_mp(w * h)} MP), over the {_mp(max_pixels)} MP limit"


def _too_large_from_bomb(path: str, exc: Exception, max_pixels: int) -> MediaError:
    """Pillow refused the header itself (over 2x its own limit); say the size in plain words."""
    dims = _header_dimensions(path)
    # (a size under both limits means the header read here is not the one at fault: a frame inside is)
    if dims is not None and dims[0] * dims[1] > min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels):
        return MediaError(_too_large_message(dims[0], dims[1], max_pixels), kind=ErrorKind.TOO_LARGE)
    return MediaError(f"image is too large to decode safely ({exc})", kind=ErrorKind.TOO_LARGE)


def _header_dimensions(path: str) -> tuple[int, int] | None:
    """Width/height from a PNG/GIF/WebP/JPEG header without Pillow; used only for error messages."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
    except OSError:
        return None
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", head[6:10])
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            chunk = head[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(head[24:27], "little") + 1
                h = int.from_bytes(head[27:30], "little") + 1
                return w, h
            if chunk == b"VP8L":
                bits = int.from_bytes(head[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", head[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if head.startswith(b"\xff\xd8"):
            i = 2
            while i + 9 < len(head):
                if head[i] != 0xFF:
                    i += 1
                    continue
                marker = head[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                length = int.from_bytes(head[i + 2 : i + 4], "big")
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", head[i + 5 : i + 9])
                    return w, h
                i += 2 + length
    except (struct.error, IndexError):
        return None
    return None


# Image formats recognised only to say plainly that they are not decoded here.
_UNDECODABLE_MAGICS = (
    (b"8BPS\x00\x02", "PSB, Photoshop's large document format"),
    (b"\xd7\xcd\xc6\x9a", "WMF"),
    (b"\x01\x00\x00\x00", "EMF"),
    (b"%!PS-Adobe", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
)


def _unidentified(path: str) -> MediaError:
    """Why Pillow could not identify the file, in plain words."""
    from enrich.tasks.sniff import describe_mime, sniff

    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        head = b""
    found = sniff(head, os.path.splitext(path)[1].lower())
    if found is not None and found[0] == "image":
        # The magic bytes say image, yet the decoder cannot read even the header.
        return MediaError(f"corrupt image: cannot read the header of {describe_mime(found[1])}", kind=ErrorKind.CORRUPT)
    if found is not None:
        return MediaError(f"not an image: content is {describe_mime(found[1])}", kind=ErrorKind.CORRUPT)
    for magic, name in _UNDECODABLE_MAGICS:
        if head.startswith(magic) and (name != "EMF" or head[40:44] == b" EMF"):
            return MediaError(f"unsupported image format ({name}): nothing here decodes it",
                              kind=ErrorKind.UNSUPPORTED)
    return MediaError("not a recognised image (unknown or corrupt data)", kind=ErrorKind.CORRUPT)


# --------------------------------------------------------------------------------------------------
# metadata


def _format_name(img: Image.Image) -> str:
    fmt = img.format or "UNKNOWN"
    return "JPEG" if fmt == "MPO" else fmt


def _clean_str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip()
    return text or None


def _parse_exif_datetime(value: object, offset: object) -> datetime | None:
    text = _clean_str(value)
    if not text:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            dt = datetime.strptime(text[:19], fmt)
            break
        except ValueError:
            continue
    else:
        return None  # "0000:00:00 00:00:00" and other junk
    off = _clean_str(offset)
    if off and len(off) >= 6 and off[0] in "+-" and off[3] == ":":
        try:
            hours, minutes = int(off[1:3]), int(off[4:6])
            delta = timedelta(hours=hours, minutes=minutes)
            if delta < timedelta(hours=15):
                dt = dt.replace(tzinfo=timezone(delta if off[0] == "+" else -delta))
        except ValueError:
            pass
    return dt


def _rational(value: object) -> float:
    if isinstance(value, tuple) and len(value) == 2:  # raw (num, den)
        num, den = value
        return float(num) / float(den)
    return float(value)  # IFDRational, int, float


def _gps_coord(value: object, ref: object, negative_ref: str, limit: float) -> float | None:
    try:
        if isinstance(value, (tuple, list)):
            parts = [_rational(v) for v in value]
        else:
            parts = [_rational(value)]
        parts += [0.0] * (3 - len(parts))
        deg = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    if deg != deg or deg < 0 or deg > limit:  # NaN from a 0/0 rational, or nonsense
        return None
    ref_text = _clean_str(ref) or ""
    if ref_text.upper().startswith(negative_ref):
        deg = -deg
    return round(deg, 7)


def _meta_from(img: Image.Image) -> tuple[ImageMeta, int]:
    """ImageMeta and the EXIF orientation (1 when absent), from an opened (not loaded) image."""
    try:
        exif = img.getexif()
    except Exception:  # broken EXIF must not make a good image unusable
        exif = Image.Exif()

    def ifd(tag: int) -> dict:
        try:
            return dict(exif.get_ifd(tag))
        except Exception:
            return {}

    return _meta_from_tags(exif, ifd(_EXIF_IFD), ifd(_GPS_IFD), img.size, _format_name(img))


def _meta_from_tags(ifd0, exif_ifd: dict, gps: dict, size: tuple[int, int], fmt: str,
                    orientation: int | None = None) -> tuple[ImageMeta, int]:
    """ImageMeta and the orientation from decoded tags: IFD0 (a mapping), the EXIF and GPS IFDs, the stored
    size; `orientation` overrides IFD0's."""
    if orientation is None:
        try:
            orientation = int(ifd0.get(_ORIENTATION, 1) or 1)
        except (TypeError, ValueError):
            orientation = 1
    if orientation not in range(1, 9):
        orientation = 1

    taken_at = None
    for tag, off_tag, source in (
        (_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, exif_ifd),
        (_DATETIME_DIGITIZED, _OFFSET_TIME_DIGITIZED, exif_ifd),
        (_DATETIME, _OFFSET_TIME, None),
    ):
        if source is None:
            taken_at = _parse_exif_datetime(ifd0.get(tag), exif_ifd.get(off_tag))
        else:
            taken_at = _parse_exif_datetime(source.get(tag), source.get(off_tag))
        if taken_at is not None:
            break

    lat = _gps_coord(gps.get(2), gps.get(1), "S", 90.0) if 2 in gps else None
    lon = _gps_coord(gps.get(4), gps.get(3), "W", 180.0) if 4 in gps else None
    if lat is None or lon is None:
        lat = lon = None

    w, h = size
    if orientation >= 5:
        w, h = h, w
    meta = ImageMeta(
        width=w,
        height=h,
        taken_at=taken_at,
        gps_lat=lat,
        gps_lon=lon,
        camera_make=_clean_str(ifd0.get(_MAKE)),
        camera_model=_clean_str(ifd0.get(_MODEL)),
        format=fmt,
    )
    return meta, orientation


def read_image_meta(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageMeta:
    """Size (after EXIF orientation) and EXIF facts from the header only; no pixel decoding.

    Raises MediaError (`too_large`, `corrupt`, `unsupported`, `empty`, `unreadable`).
    """
    img, meta, _ = _open_any(path, max_pixels)
    img.close()
    return meta


def read_image_size(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as stored, from the header only: no EXIF parsing, no pixels. For cost estimates,
    where the EXIF orientation does not matter (it only swaps the sides). Raises MediaError like
    `read_image_meta`.

    JPEG, PNG, GIF and WebP sizes are read by a few small seeks (about 10x faster than Pillow, which
    parses all of a camera JPEG's EXIF on open); other formats and anything odd go through Pillow.
    """
    size = _quick_size(path)
    if size is None:
        path = os.fspath(path)
        mime = _sniffed_mime(path)
        if mime in RAW_MIMES:  # the preview is what is sent
            from enrich.tasks.raw_preview import find_preview

            _open_checks(path)
            preview = find_preview(path, RAW_FORMATS[mime])
            size = (preview.width, preview.height)
        else:
            img = _open(path, max_pixels, mime)
            try:
                return img.size
            finally:
                img.close()
    _check_pixels(size, max_pixels)
    return size


_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn (not DHT, JPG, DAC)


def _quick_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """The stored size from a JPEG/PNG/GIF/WebP header, or None: unknown format, or not sure."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                size = struct.unpack(">II", head[16:24])
            elif head[:6] in (b"GIF87a", b"GIF89a"):
                size = struct.unpack("<HH", head[6:10])
            elif head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
                size = _webp_size(head)
            elif head.startswith(b"\xff\xd8"):
                size = _jpeg_size(f)
            else:
                return None
    except (OSError, struct.error):
        return None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None  # Pillow says what is wrong
    return int(size[0]), int(size[1])


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":  # extended (alpha, animation): the canvas
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L" and head[20] == 0x2F:  # lossless
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _jpeg_size(f) -> tuple[int, int] | None:
    """Walk the marker segments (seeking over their bodies) to the frame header."""
    pos = 2
    for _ in range(256):  # a real JPEG has a dozen segments before its frame header
        f.seek(pos)
        seg = f.read(9)
        if len(seg) < 4 or seg[0] != 0xFF:
            return None
        marker = seg[1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _JPEG_FRAME_MARKERS:
            if len(seg) < 9:
                return None
            height, width = struct.unpack(">HH", seg[5:9])
            return width, height
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
        elif marker in (0xD9, 0xDA):  # end of image or scan data before any frame header: corrupt
            return None
        else:
            pos += 2 + int.from_bytes(seg[2:4], "big")
    return None


def uploaded_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size `prepare_image(..., max_side=max_side)` uploads an image of this size at: long side
    <= max_side, aspect ratio kept, never upscaled."""
    return _target_size(width, height, max_side)


# --------------------------------------------------------------------------------------------------
# pixels


def _target_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    long_side = max(w, h)
    if long_side <= max_side:
        return w, h
    scale = max_side / long_side
    return max(1, round(w * scale)), max(1, round(h * scale))


def _srgb() -> ImageCms.ImageCmsProfile:
    global _SRGB_PROFILE
    if _SRGB_PROFILE is None:
        _SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _SRGB_PROFILE


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert pixels from an embedded ICC profile to sRGB (we then drop the profile)."""
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(src) or "").strip().lower()
        if desc.startswith("srgb") or desc.startswith("s-rgb"):
            return img
        if img.mode in ("L", "LA"):
            return img  # gray profiles: nothing useful to do
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(
            img, src, _srgb(), renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode=out_mode
        )
    except Exception:
        return img  # a broken profile: keep the pixels as they are


def _lab_to_rgb(img: Image.Image) -> Image.Image:
    """CIELAB (TIFF, PSD) to sRGB through LittleCMS (Pillow's convert() has no LAB -> RGB)."""
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), _srgb(), "LAB", "RGB")
    return ImageCms.applyTransform(img, transform)


def _scaled_to_8bit(img: Image.Image, lo: float, hi: float) -> Image.Image:
    """Gray "I"/"F" pixels mapped to 0..255: floats in 0..1 times 255, values that fit 0..255 kept, 16-bit
    values / 257, anything else stretched from its own range."""
    if lo >= 0 and hi <= 1.0 and img.mode == "F":
        return img.point(lambda v: v * 255.0).convert("L")
    if lo >= 0 and hi <= 255:
        return img.convert("L")
    if lo >= 0 and hi <= 65535:
        return img.point(lambda v: v / 257.0).convert("L")
    span = (hi - lo) or 1.0
    return img.point(lambda v: (v - lo) * (255.0 / span)).convert("L")


def _to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float gray (16-bit PNG/TIFF/PGM, PFM, FITS) to 8-bit "L", scaled properly
    (Pillow's own convert clips to white); LAB to RGB; modes resize() cannot handle to RGB(A)."""
    mode = img.mode
    if mode.startswith("I;16"):
        return img.convert("I").point(lambda v: v / 257.0).convert("L")
    if mode in ("I", "F"):
        lo, hi = img.getextrema()
        return _scaled_to_8bit(img, float(lo), float(hi))
    if mode == "LAB":
        return _lab_to_rgb(img)
    if mode in ("HSV", "YCbCr", "RGBX"):
        return img.convert("RGB")
    if mode.startswith("BGR;"):
        return img.convert("RGB")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB pixels; transparency composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    elif mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    elif mode == "L" and "transparency" in img.info:  # a gray PNG with a transparent value
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _reopen_error(exc: Exception) -> MediaError:
    text = str(exc) or exc.__class__.__name__
    return MediaError(f"truncated or corrupt image data: {text}", kind=ErrorKind.TRUNCATED)


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, RuntimeError)


def _open_any(path: str | os.PathLike[str], max_pixels: int) -> tuple[Image.Image, ImageMeta, int]:
    """The opened (not decoded) image to prepare, its metadata and orientation: the file itself, or for a
    camera RAW its largest embedded preview with the RAW's own metadata and orientation."""
    path = os.fspath(path)
    mime = _sniffed_mime(path)
    if mime in RAW_MIMES:
        return _open_raw(path, RAW_FORMATS[mime], max_pixels)
    img = _open(path, max_pixels, mime)
    try:
        meta, orientation = _meta_from(img)
    except BaseException:
        img.close()
        raise
    return img, meta, orientation


def _open_raw(path: str, fmt: str, max_pixels: int) -> tuple[Image.Image, ImageMeta, int]:
    from enrich.tasks.raw_preview import find_preview, read_preview_bytes

    _open_checks(path)
    preview = find_preview(path, fmt)
    _check_pixels((preview.width, preview.height), max_pixels)
    data = read_preview_bytes(path, preview)
    try:
        img = Image.open(io.BytesIO(data), formats=["JPEG"])
    except Exception as exc:
        raise MediaError(f"{fmt} preview is not a readable JPEG: {exc}", kind=ErrorKind.RAW_NO_PREVIEW) from None
    try:
        _check_pixels(img.size, max_pixels)
        if preview.orientation is None:  # RAF: the preview's EXIF is the RAW's metadata
            meta, orientation = _meta_from(img)
            meta = replace(meta, format=fmt)
        else:
            meta, orientation = _meta_from_tags(preview.ifd0, preview.exif, preview.gps, img.size, fmt,
                                                orientation=preview.orientation)
    except BaseException:
        img.close()
        raise
    return img, meta, orientation


def _open_checks(path: str) -> None:
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise MediaError(f"file not found: {path}", kind=ErrorKind.UNREADABLE) from None
    except OSError as exc:
        raise MediaError(f"cannot read file: {exc.strerror or exc}", kind=ErrorKind.UNREADABLE) from None
    if size == 0:
        raise MediaError("empty file (0 bytes)", kind=ErrorKind.EMPTY)


def prepare_image(
    path: str | os.PathLike[str],
    *,
    max_side: int = RESOLUTION_MAX_SIDE["low"],
    keep_metadata: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PreparedImage:
    """Decode, orient, downscale (long side <= `max_side`), re-encode as metadata-free JPEG q=85.

    JPEGs (and RAW previews) are decoded with DCT scaling (draft mode) straight to about the target size,
    which is what makes a 12 MP photo cheap. Raises MediaError (see module docstring for kinds).
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    img, meta, orientation = _open_any(path, max_pixels)
    try:
        exif_bytes = _exif_to_keep(img) if keep_metadata else None
        icc = img.info.get("icc_profile")
        stored_w, stored_h = img.size
        # The target box in stored (pre-orientation) coordinates: the long side is the same either way.
        target = _target_size(stored_w, stored_h, max_side)
        try:
            if target != (stored_w, stored_h):
                if img.format in _JPEG_FORMATS:
                    img.draft("RGB", target)  # libjpeg decodes at 1/2, 1/4 or 1/8 scale
                elif img.format == "HEIF":
                    img.draft(None, target)  # may pick an embedded thumbnail that is big enough
                elif img.format == "JPEG2000":
                    # OpenJPEG decodes a lower resolution level directly: 1/2^n of each side
                    img.reduce = _j2k_reduce(stored_w, stored_h, target)  # type: ignore[method-assign]
            img.load()
        except Image.DecompressionBombError as exc:
            if stored_w * stored_h > max_pixels:
                raise MediaError(_too_large_message(stored_w, stored_h, max_pixels),
                                 kind=ErrorKind.TOO_LARGE) from None
            # the header's size was fine; a frame or embedded image inside is not
            raise MediaError(f"image is too large to decode safely ({exc})", kind=ErrorKind.TOO_LARGE) from None
        except _DECODE_ERRORS as exc:
            raise _reopen_error(exc) from None
        work: Image.Image = img
        try:
            work = _to_8bit(work)
            if work.size != target and (work.size[0] > target[0] or work.size[1] > target[1]):
                # `reducing_gap=2` box-reduces by an integer factor first (cheap), then LANCZOS for the
                # rest; Pillow's own thumbnail default, visually the same as a plain LANCZOS.
                if work.mode in ("P", "1", "PA"):
                    work = work.convert("RGBA" if "transparency" in work.info or work.mode == "PA" else "RGB")
                work = work.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
            work = _to_srgb(work, icc)
            work = _to_rgb(work)
            if orientation in _TRANSPOSE:
                work = work.transpose(_TRANSPOSE[orientation])
        except _DECODE_ERRORS as exc:
            raise _reopen_error(exc) from None
        data = _encode_jpeg(work, exif_bytes)
        return PreparedImage(mime="image/jpeg", data=data, width=work.size[0], height=work.size[1], meta=meta)
    finally:
        img.close()


def _j2k_reduce(w: int, h: int, target: tuple[int, int]):
    """Pillow's JPEG 2000 plugin reads `reduce` as the number of resolution levels to drop."""
    level = 0
    while (w >> (level + 1)) >= target[0] and (h >> (level + 1)) >= target[1] and level < 5:
        level += 1
    return level


def _exif_to_keep(img: Image.Image) -> bytes | None:
    """EXIF for users who opted in to keeping metadata; orientation reset since pixels are upright."""
    try:
        exif = img.getexif()
        if not exif:
            return None
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1
        return exif.tobytes()
    except Exception:
        return None


def _encode_jpeg(img: Image.Image, exif: bytes | None) -> bytes:
    # Pillow copies `comment` (and may copy other entries) from `info` when saving: start clean.
    img.info = {}
    buf = io.BytesIO()
    params: dict = {"quality": JPEG_QUALITY, "optimize": False}
    if exif:
        params["exif"] = exif
    img.save(buf, format="JPEG", **params)
    return buf.getvalue()
