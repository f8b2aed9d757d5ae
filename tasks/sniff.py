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
}


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
    mime = _text_mime(head, ext)
    if mime is not None:
        return MediaKind.DOCUMENT, mime
    return None
