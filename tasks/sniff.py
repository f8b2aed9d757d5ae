"""Content sniffing: what a file really is, judged by its first bytes, not its name.

`sniff(head, ext)` looks at the first few hundred bytes of a file (``SNIFF_BYTES``; magic numbers
only need the first 64) and returns ``(kind, mime)`` or ``None`` when the content is not a media
type the pipeline knows. Kinds: ``image``, ``audio``, ``video``, ``document`` (PDF and text).

It never raises on any input: it is fed untrusted bytes from every file of a scan.
"""
from __future__ import annotations

import codecs

from enrich.schemas.vocab import MediaKind

__all__ = [
    "SNIFF_BYTES",
    "EXTENSION_MIMES",
    "TEXT_DOCUMENT_EXTENSIONS",
    "kind_of_mime",
    "describe_mime",
    "sniff",
    "RAW_FORMATS",
    "RAW_MIMES",
    "COMPANION_EXTENSIONS",
    "companion_of",
    "image_format_of_mime",
    "sniff_with_decoder",
    "refine_tiff",
]

# How many bytes callers should read for `sniff`. Magic numbers sit in the first 64 bytes; the rest
# makes the text check (no NUL, valid UTF-8) meaningful.
SNIFF_BYTES = 1024

# What a file name claims. Keys are lower-case extensions with the dot.
EXTENSION_MIMES: dict[str, str] = {
    # images
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heics": "image/heic",
    ".heif": "image/heif",
    ".heifs": "image/heif",
    ".hif": "image/heif",
    ".avif": "image/avif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".bmp": "image/bmp",
    ".psd": "image/vnd.adobe.photoshop",
    ".tga": "image/x-tga",
    ".jp2": "image/jp2",
    ".jpf": "image/jp2",
    ".jpx": "image/jp2",
    ".j2k": "image/x-jp2-codestream",
    ".j2c": "image/x-jp2-codestream",
    ".ico": "image/x-icon",
    ".icns": "image/icns",
    ".ppm": "image/x-portable-pixmap",
    ".pgm": "image/x-portable-graymap",
    ".pbm": "image/x-portable-bitmap",
    ".pnm": "image/x-portable-anymap",
    ".dds": "image/vnd.ms-dds",
    ".qoi": "image/qoi",
    # camera RAW (described from their embedded preview JPEG: tasks/raw_preview.py)
    ".dng": "image/x-adobe-dng",
    ".cr2": "image/x-canon-cr2",
    ".cr3": "image/x-canon-cr3",
    ".nef": "image/x-nikon-nef",
    ".nrw": "image/x-nikon-nrw",
    ".arw": "image/x-sony-arw",
    ".srf": "image/x-sony-srf",
    ".sr2": "image/x-sony-sr2",
    ".orf": "image/x-olympus-orf",
    ".rw2": "image/x-panasonic-rw2",
    ".rwl": "image/x-panasonic-rw2",
    ".pef": "image/x-pentax-pef",
    ".srw": "image/x-samsung-srw",
    ".raf": "image/x-fuji-raf",
    ".erf": "image/x-epson-erf",
    ".kdc": "image/x-kodak-kdc",
    ".dcr": "image/x-kodak-dcr",
    ".mos": "image/x-leaf-mos",
    ".mef": "image/x-mamiya-mef",
    ".3fr": "image/x-hasselblad-3fr",
    ".iiq": "image/x-phaseone-iiq",
    # audio
    ".mp3": "audio/mp3",
    ".wav": "audio/wav",
    ".wave": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".m4a": "audio/mp4",
    ".m4b": "audio/mp4",
    ".aac": "audio/aac",
    # video
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".qt": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/webm",
    # documents
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
}

# Camera RAW files: mime -> the format name recorded in `media_format`.
RAW_FORMATS: dict[str, str] = {
    mime: ext[1:].upper() for ext, mime in EXTENSION_MIMES.items() if mime.startswith("image/x-")
    and ext in (".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".pef", ".srw",
                ".raf", ".erf", ".kdc", ".dcr", ".mos", ".mef", ".3fr", ".iiq")
}
RAW_FORMATS["image/x-panasonic-rw2"] = "RW2"
RAW_MIMES: frozenset[str] = frozenset(RAW_FORMATS)
# TIFF-structured RAW files whose magic is plain TIFF: the extension (or a DNGVersion tag) tells them apart.
_TIFF_RAW_BY_EXT = {ext: mime for ext, mime in EXTENSION_MIMES.items()
                    if mime in RAW_MIMES and mime not in ("image/x-fuji-raf", "image/x-canon-cr3")}

# Companion files that sit beside photos and videos: sidecars (XMP, darktable, RawTherapee, DxO, Capture
# One), iOS edits, thumbnails and proxies, catalogues, OS litter. Recognised by name and skipped quietly
# (status `skipped`, error_kind `companion`), whatever their content.
COMPANION_EXTENSIONS: dict[str, str] = {
    ".xmp": "an XMP sidecar",
    ".aae": "an iOS edit sidecar",
    ".thm": "a camera thumbnail",
    ".lrv": "a low-resolution video proxy",
    ".pp3": "a RawTherapee sidecar",
    ".pp2": "a RawTherapee sidecar",
    ".dop": "a DxO sidecar",
    ".cos": "a Capture One sidecar",
    ".cof": "a Capture One sidecar",
    ".lrcat": "a Lightroom catalogue",
    ".lrdata": "a Lightroom catalogue file",
    ".lrcat-journal": "a Lightroom catalogue journal",
    ".lrcat-wal": "a Lightroom catalogue journal",
    ".lrcat-shm": "a Lightroom catalogue journal",
    ".acr": "an Adobe Camera Raw sidecar",
    ".on1": "an ON1 sidecar",
    ".photoscape": "a PhotoScape sidecar",
    ".xmp~": "an XMP sidecar backup",
}
COMPANION_NAMES: dict[str, str] = {
    ".ds_store": "macOS folder metadata",
    "thumbs.db": "a Windows thumbnail cache",
    "desktop.ini": "Windows folder settings",
    ".picasa.ini": "Picasa folder settings",
    "picasa.ini": "Picasa folder settings",
    "zbthumbnail.info": "a thumbnail cache",
}


def companion_of(name: str) -> str | None:
    """What companion file `name` is ("an XMP sidecar"), or None when it is not one. By name only: a sidecar's
    content is text or a database, nothing a model describes. `photo.jpg.xmp` (darktable, digiKam) and
    `photo.xmp` (Lightroom) are both XMP sidecars; `._photo.jpg` is macOS resource-fork litter."""
    lowered = name.lower()
    if lowered in COMPANION_NAMES:
        return COMPANION_NAMES[lowered]
    if lowered.startswith("._"):
        return "a macOS resource fork"
    for ext, what in COMPANION_EXTENSIONS.items():
        if lowered.endswith(ext):
            return what
    return None


# Extensions under which text content counts as a document to describe. Text under any other name
# (.json/.xmp/.aae sidecars, source code, logs) is not media: see tasks.discover.
TEXT_DOCUMENT_EXTENSIONS: frozenset[str] = frozenset(
    ext for ext, mime in EXTENSION_MIMES.items() if mime.startswith("text/")
)

_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_BRANDS = {b"mif1", b"msf1", b"heif", b"mif2", b"mif3"}
_AVIF_BRANDS = {b"avif", b"avis"}
_M4A_BRANDS = {b"M4A ", b"M4B ", b"M4P "}
_MP4_BRANDS = {
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9",
    b"mp41", b"mp42", b"mp71", b"avc1", b"dash", b"M4V ", b"M4VH", b"M4VP", b"f4v ",
    b"MSNV", b"NDAS", b"mmp4", b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3gp8", b"3gp9",
    b"3g2a", b"3g2b", b"3g2c", b"XAVC",
}
_QT_BRANDS = {b"qt  "}
_AUDIO_EXTENSIONS = {ext for ext, mime in EXTENSION_MIMES.items() if mime.startswith("audio/")}

# MPEG audio layer III frame headers (sync + version + layer bits, with/without CRC).
_MP3_SECOND_BYTES = {0xFB, 0xFA, 0xF3, 0xF2, 0xE3, 0xE2}
# ADTS AAC: sync + layer 00, MPEG-4 (0xF1) or MPEG-2 (0xF9), with or without CRC.
_ADTS_SECOND_BYTES = {0xF1, 0xF0, 0xF9, 0xF8}

# C0 control characters that plain text may contain (tab, LF, VT, FF, CR, ESC for ANSI colours).
_TEXT_CONTROLS = frozenset(b"\t\n\x0b\x0c\r\x1b")
_BAD_CONTROLS = frozenset(range(0x20)) - _TEXT_CONTROLS | {0x7F}

_MIME_DESCRIPTIONS = {
    "text/plain": "plain text",
    "text/markdown": "Markdown text",
    "text/html": "HTML",
    "application/pdf": "a PDF document",
    "image/vnd.adobe.photoshop": "a PSD image",
    "image/vnd.ms-dds": "a DDS image",
    "image/x-icon": "an ICO image",
    "image/x-portable-pixmap": "a PPM image",
    "image/x-portable-graymap": "a PGM image",
    "image/x-portable-bitmap": "a PBM image",
    "image/x-portable-anymap": "a PNM image",
    "image/x-jp2-codestream": "a JPEG 2000 codestream",
    "image/jp2": "a JPEG 2000 image",
}

# What the sniffed mime is as a format name, for the `media_format` column of image rows.
_IMAGE_FORMAT_NAMES = {
    "image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP", "image/heic": "HEIF",
    "image/heif": "HEIF", "image/avif": "AVIF", "image/tiff": "TIFF", "image/bmp": "BMP",
    "image/vnd.adobe.photoshop": "PSD", "image/x-tga": "TGA", "image/jp2": "JPEG2000",
    "image/x-jp2-codestream": "JPEG2000", "image/x-icon": "ICO", "image/x-cursor": "CUR", "image/icns": "ICNS",
    "image/x-portable-pixmap": "PPM", "image/x-portable-graymap": "PPM", "image/x-portable-bitmap": "PPM",
    "image/x-portable-anymap": "PPM", "image/x-portable-floatmap": "PFM", "image/vnd.ms-dds": "DDS",
    "image/qoi": "QOI", "image/sgi": "SGI", "image/x-sun-raster": "SUN", "image/x-pcx": "PCX",
    "image/x-dcx": "DCX", "image/x-xbitmap": "XBM", "image/x-xpixmap": "XPM", "image/fits": "FITS",
    "image/x-blp": "BLP", "image/x-flic": "FLI", "image/x-msp": "MSP", "image/x-pil-im": "IM",
    "image/x-xvthumb": "XVTHUMB", "image/x-ftex": "FTEX", "image/x-gimp-gbr": "GBR", "image/x-pam": "PPM",
}


def image_format_of_mime(mime: str | None) -> str | None:
    """The format name of a sniffed image mime ("TIFF", "CR2", "PSD"); None for other kinds."""
    if not mime or not mime.startswith("image/"):
        return None
    if mime in RAW_FORMATS:
        return RAW_FORMATS[mime]
    if mime in _IMAGE_FORMAT_NAMES:
        return _IMAGE_FORMAT_NAMES[mime]
    return mime.split("/", 1)[1].removeprefix("x-").upper()


def kind_of_mime(mime: str | None) -> str | None:
    """`image`, `audio`, `video`, `document` or None for a mime type."""
    if not mime:
        return None
    major = mime.split("/", 1)[0]
    if major in ("image", "audio", "video"):
        return MediaKind(major)
    if mime == "application/pdf" or major == "text":
        return MediaKind.DOCUMENT
    return None


def describe_mime(mime: str) -> str:
    """Human words for a mime type, for error messages ("plain text", "a PNG image")."""
    if mime in _MIME_DESCRIPTIONS:
        return _MIME_DESCRIPTIONS[mime]
    if mime in RAW_FORMATS:
        return f"a {RAW_FORMATS[mime]} camera RAW file"
    major, _, minor = mime.partition("/")
    minor = minor.removeprefix("x-").upper()
    return f"a {minor} {major}" if major in (MediaKind.IMAGE, "audio", "video") else mime


def _iso_bmff(head: bytes, ext: str) -> tuple[str, str] | None:
    """ISO base media file: ``<size>ftyp<major brand><minor version><compatible brands...>``."""
    major = head[8:12]
    if len(major) < 4:
        return None
    box_size = int.from_bytes(head[0:4], "big")
    end = box_size if 16 <= box_size <= len(head) else len(head)
    compatible = [head[i : i + 4] for i in range(16, end - 3, 4)]

    def specific(brand: bytes) -> tuple[str, str] | None:
        if brand == b"crx ":
            return MediaKind.IMAGE, "image/x-canon-cr3"
        if brand in _AVIF_BRANDS:
            return MediaKind.IMAGE, "image/avif"
        if brand in _HEIC_BRANDS:
            return MediaKind.IMAGE, "image/heic"
        if brand in _M4A_BRANDS:
            return MediaKind.AUDIO, "audio/mp4"
        if brand in _QT_BRANDS:
            return MediaKind.VIDEO, "video/quicktime"
        return None

    def generic(brand: bytes) -> tuple[str, str] | None:
        if brand in _HEIF_BRANDS:
            return MediaKind.IMAGE, "image/heif"
        if brand in _MP4_BRANDS:
            # A plain `isom`/`mp42` file named .m4a/.aac is an audio-only MP4.
            return (MediaKind.AUDIO, "audio/mp4") if ext in _AUDIO_EXTENSIONS else (MediaKind.VIDEO, "video/mp4")
        return None

    # A specific major brand decides; then a specific compatible brand (major `mif1` listing `heic`,
    # major `isom` listing `M4A `); then the generic containers.
    for pick in (specific, generic):
        for brand in (major, *compatible):
            found = pick(brand)
            if found is not None:
                return found
    return None


def _text_mime(head: bytes, ext: str) -> str | None:
    """`text/...` when `head` looks like text, else None."""
    if not head or b"\x00" in head:
        return None
    sample = head
    if sample.startswith(codecs.BOM_UTF8):
        sample = sample[len(codecs.BOM_UTF8) :]
    try:
        sample.decode("utf-8")
        is_utf8 = True
    except UnicodeDecodeError as exc:
        # A multibyte character cut by the end of the sample is still text.
        is_utf8 = exc.reason == "unexpected end of data" and exc.start >= len(sample) - 3
    # Legacy 8-bit text (latin-1, cp1252) is accepted only when the name says it is text.
    if not is_utf8 and ext not in TEXT_DOCUMENT_EXTENSIONS:
        return None
    if not _BAD_CONTROLS.isdisjoint(sample):
        return None
    if ext in (".html", ".htm"):
        return "text/html"
    lowered = sample.lstrip().lower()
    if lowered.startswith(b"<!doctype html") or lowered.startswith(b"<html"):
        return "text/html"
    if ext in (".md", ".markdown"):
        return "text/markdown"
    return "text/plain"


def sniff(head: bytes, ext: str = "") -> tuple[str, str] | None:
    """Return ``(kind, mime)`` for the content in `head` (a file's first bytes), or None.

    `ext` is the file's extension (".md"), used only to refine text (markdown/html) and to tell an
    ISO-BMFF audio file from a video one; the magic bytes decide everything else.
    """
    try:
        head = bytes(head)
        ext = (ext or "").lower()
        return _sniff(head, ext)
    except Exception:  # never let odd input crash a scan
        return None


def _tiff_mime(head: bytes, ext: str) -> str:
    """A TIFF-structured file: a plain TIFF, or a camera RAW (CR2 and DNG by content, the rest by name)."""
    if head[8:10] == b"CR":
        return "image/x-canon-cr2"
    if ext in _TIFF_RAW_BY_EXT:
        return _TIFF_RAW_BY_EXT[ext]
    if _has_dng_version(head):
        return "image/x-adobe-dng"
    return "image/tiff"


def _has_dng_version(head: bytes) -> bool:
    """True when IFD0 (if it lies within `head`) has the DNGVersion tag (0xC612)."""
    order = "<" if head[:2] == b"II" else ">"
    if head[2:4] not in (b"*\x00", b"\x00*"):
        return False
    offset = int.from_bytes(head[4:8], "little" if order == "<" else "big")
    if offset < 8 or offset + 2 > len(head):
        return False
    count = int.from_bytes(head[offset : offset + 2], "little" if order == "<" else "big")
    tag_bytes = (0xC612).to_bytes(2, "little" if order == "<" else "big")
    for i in range(min(count, 512)):
        at = offset + 2 + 12 * i
        if at + 2 > len(head):
            break
        if head[at : at + 2] == tag_bytes:
            return True
    return False


def _ico_like(head: bytes) -> bool:
    """ICO/CUR: reserved 0, type 1/2, 1..256 entries, the first with a reserved 0 byte and some data."""
    if len(head) < 22:
        return False
    count = int.from_bytes(head[4:6], "little")
    size = int.from_bytes(head[14:18], "little")
    offset = int.from_bytes(head[18:22], "little")
    return 1 <= count <= 256 and head[9] == 0 and size > 0 and offset >= 6 + 16 * count


def _tga_like(head: bytes, ext: str) -> bool:
    """TGA has no magic number: the name says TGA and the header is plausible."""
    if ext not in (".tga", ".icb", ".vda", ".vst") or len(head) < 18:
        return False
    colormap, image_type, depth = head[1], head[2], head[16]
    width, height = int.from_bytes(head[12:14], "little"), int.from_bytes(head[14:16], "little")
    return (colormap in (0, 1) and image_type in (1, 2, 3, 9, 10, 11, 32, 33)
            and depth in (1, 8, 15, 16, 24, 32) and width > 0 and height > 0)


def _pcx_like(head: bytes) -> bool:
    return (len(head) >= 128 and head[0] == 0x0A and head[1] in (0, 2, 3, 4, 5) and head[2] in (0, 1)
            and head[3] in (1, 2, 4, 8))


def _bmp_like(head: bytes) -> bool:
    return len(head) >= 18 and int.from_bytes(head[14:18], "little") in (12, 16, 40, 52, 56, 64, 108, 124)


# Magic numbers of the other image formats Pillow decodes, checked in order: (prefix, mime).
_IMAGE_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"8BPS\x00\x01", "image/vnd.adobe.photoshop"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "image/jp2"),
    (b"\xff\x4f\xff\x51", "image/x-jp2-codestream"),
    (b"icns", "image/icns"),
    (b"DDS ", "image/vnd.ms-dds"),
    (b"qoif", "image/qoi"),
    (b"\x01\xda", "image/sgi"),
    (b"\x59\xa6\x6a\x95", "image/x-sun-raster"),
    (b"\xb1\x68\xde\x3a", "image/x-dcx"),
    (b"/* XPM */", "image/x-xpixmap"),
    (b"SIMPLE  =", "image/fits"),
    (b"BLP1", "image/x-blp"),
    (b"BLP2", "image/x-blp"),
    (b"DanM", "image/x-msp"),
    (b"LinS", "image/x-msp"),
    (b"Image type:", "image/x-pil-im"),
    (b"P7 332", "image/x-xvthumb"),
    (b"FTEX", "image/x-ftex"),
)
_PNM_MIMES = {b"1": "image/x-portable-bitmap", b"4": "image/x-portable-bitmap", b"2": "image/x-portable-graymap",
              b"5": "image/x-portable-graymap", b"3": "image/x-portable-pixmap", b"6": "image/x-portable-pixmap",
              b"7": "image/x-pam", b"f": "image/x-portable-floatmap", b"F": "image/x-portable-floatmap"}


def _other_image(head: bytes, ext: str) -> str | None:
    """The mime of an image format found by its magic number (TIFF family, BMP, PSD, JPEG 2000, ...)."""
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff_mime(head, ext)
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR"):
        return "image/x-olympus-orf"
    if head[:4] == b"IIU\x00":
        return "image/x-panasonic-rw2"
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return "image/x-fuji-raf"
    for magic, mime in _IMAGE_MAGICS:
        if head.startswith(magic):
            return mime
    if head[:2] == b"BM" and _bmp_like(head):
        return "image/bmp"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and _ico_like(head):
        return "image/x-icon" if head[2] == 1 else "image/x-cursor"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in _PNM_MIMES and head[2:3] in (b" ", b"\t", b"\n", b"\r"):
        return _PNM_MIMES[head[1:2]]
    if head.startswith(b"#define") and b"_width" in head[:256]:
        return "image/x-xbitmap"
    if len(head) >= 6 and head[4:6] in (b"\x11\xaf", b"\x12\xaf") and ext in (".fli", ".flc"):
        return "image/x-flic"
    if _pcx_like(head) and ext in (".pcx", ".dcx"):
        return "image/x-pcx"
    if _tga_like(head, ext):
        return "image/x-tga"
    return None


def _sniff(head: bytes, ext: str) -> tuple[str, str] | None:
    if not head:
        return None
    if head.startswith(b"\xff\xd8\xff"):
        return MediaKind.IMAGE, "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaKind.IMAGE, "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return MediaKind.IMAGE, "image/gif"
    if head.startswith(b"RIFF") and len(head) >= 12:
        form = head[8:12]
        if form == b"WEBP":
            return MediaKind.IMAGE, "image/webp"
        if form == b"WAVE":
            return MediaKind.AUDIO, "audio/wav"
        return None
    if head[4:8] == b"ftyp":
        return _iso_bmff(head, ext)
    if head.startswith(b"%PDF-"):
        return MediaKind.DOCUMENT, "application/pdf"
    if head.startswith(b"fLaC"):
        return MediaKind.AUDIO, "audio/flac"
    if head.startswith(b"OggS"):
        if b"\x80theora" in head[:256]:
            return MediaKind.VIDEO, "video/ogg"
        return MediaKind.AUDIO, "audio/ogg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return MediaKind.VIDEO, "video/webm"
    if head.startswith(b"ID3"):
        return MediaKind.AUDIO, "audio/mp3"
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] in _ADTS_SECOND_BYTES:
            return MediaKind.AUDIO, "audio/aac"
        if head[1] in _MP3_SECOND_BYTES:
            return MediaKind.AUDIO, "audio/mp3"
    mime = _other_image(head, ext)
    if mime is not None:
        return MediaKind.IMAGE, mime
    mime = _text_mime(head, ext)
    if mime is not None:
        return MediaKind.DOCUMENT, mime
    return None


def refine_tiff(path: str, mime: str) -> str:
    """A plain TIFF whose IFD0 lies beyond the sniffed head may still be a DNG (phones write DNGs named
    anything): read IFD0 from the file and look for DNGVersion. Returns the mime to use. Never raises."""
    if mime != "image/tiff":
        return mime
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            order = "little" if head[:2] == b"II" else "big"
            offset = int.from_bytes(head[4:8], order)
            if offset + 2 <= SNIFF_BYTES:
                return mime  # IFD0 was in the head: sniff has looked already
            f.seek(offset)
            count = int.from_bytes(f.read(2), order)
            entries = f.read(12 * min(count, 512))
        tag = (0xC612).to_bytes(2, order)
        if any(entries[i : i + 2] == tag for i in range(0, len(entries) - 1, 12)):
            return "image/x-adobe-dng"
    except (OSError, ValueError):
        pass
    return mime


# Formats Pillow opens that register no file extension of their own.
_UNREGISTERED_EXTENSIONS = {".spider": "SPIDER", ".spi": "SPIDER", ".imt": "IMT", ".ara": "MCIDAS"}

# Pillow formats that only identify a file (no decoder here: stubs, or an external program needed).
_NOT_DECODABLE = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "EPS", "WMF", "FPX", "MIC"})


def sniff_with_decoder(path: str, ext: str) -> tuple[str, str] | None:
    """For a file the magic numbers did not place: ``("image", "image/x-<format>")`` when Pillow opens it
    with a format registered for its extension (formats without a magic number: SPIDER, PCD, GBR, WAL...).
    Only the header is read. Never raises."""
    try:
        from PIL import Image

        Image.init()
        ext = (ext or "").lower()
        fmt = Image.registered_extensions().get(ext) or _UNREGISTERED_EXTENSIONS.get(ext)
        if fmt is None or fmt in _NOT_DECODABLE or fmt not in Image.OPEN:
            return None
        with Image.open(path, formats=[fmt]) as img:
            if img.size[0] <= 0 or img.size[1] <= 0:
                return None
            return MediaKind.IMAGE, f"image/x-{img.format.lower()}"
    except Exception:
        return None
