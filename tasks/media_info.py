"""Header-only facts about audio, video and documents, and the tokens they will cost.

Everything here reads container headers (mutagen for audio and MP4/MOV, a small EBML reader for WebM,
pypdf's page tree for PDF), never decodes samples or frames, so it is fast enough for `enrich estimate`
over a whole library and for preparing items before a run.

Two flavours of each probe:
- `read_audio`, `read_video`, `read_pdf`, `read_text`: raise `MediaError` with a clear reason and a kind
  (`corrupt`, `truncated`, `encrypted`, `empty`, `too_large`, `timeout`, `unknown_duration`); the preparers
  use these so every bad file becomes a readable per-item error.
- `audio_seconds`, `video_seconds`, `pdf_pages`, `text_chars`, `probe`: return None on unreadable files;
  for the estimator.

An *info* dict is what the token rules need, and is also a prepared item's `media_tokens_hint`:
    {"kind": "audio", "seconds": 12.5, "codec": "mp3", "sample_rate": 44100, "channels": 2}
    {"kind": "video", "seconds": 30.0, "codec": "mp4"}
    {"kind": "pdf", "pages": 12}
    {"kind": "text", "chars": 5120}
    {"kind": "image", "width": 768, "height": 512}      (images: prepared size; see tasks/prepare_image.py)
`apply_limits(info, limits)` applies the configured maximums (refuse, or trim when allowed) and
`input_tokens_for(info, model, resolution, prompt, schema)` gives (input tokens, of which audio).
"""
from __future__ import annotations

import codecs
import logging
import os
import struct
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from pydantic import BaseModel

from enrich.schemas.vocab import ErrorKind
from enrich.errors import MediaError
from enrich.settings import default
from enrich.tokens import (
    audio_tokens, image_tokens, pdf_tokens, prompt_tokens, text_chars_tokens, video_audio_tokens, video_tokens,
)

__all__ = [
    "MediaLimits", "PDF_MAX_BYTES",
    "read_audio", "read_video", "read_pdf", "read_text", "count_text_chars",
    "audio_seconds", "video_seconds", "pdf_pages", "text_chars", "probe",
    "apply_limits", "media_tokens", "input_tokens_for",
]

# pypdf logs every oddity of a broken file as a warning; our per-item error says what matters.
logging.getLogger("pypdf").setLevel(logging.ERROR)

PDF_MAX_BYTES = 50 * 1024 * 1024  # Gemini's limit for one PDF, inline or uploaded
_ERROR_TEXT_CAP = 200
_TEXT_BLOCK = 1 << 20

P = TypeVar("P")


@dataclass(frozen=True)
class MediaLimits:
    """The configured maximums (settings [media]); `trim` cuts WAV audio and text instead of refusing."""

    max_audio_seconds: float = default("max_audio_seconds")
    max_video_seconds: float = default("max_video_seconds")
    max_pdf_pages: int = default("max_pdf_pages")
    max_text_chars: int = default("max_text_chars")
    trim: bool = default("trim_long_media")
    pdf_timeout_s: float = default("pdf_timeout_s")

    @classmethod
    def from_settings(cls, settings: Any) -> "MediaLimits":
        return cls(
            max_audio_seconds=settings.max_audio_seconds, max_video_seconds=settings.max_video_seconds,
            max_pdf_pages=settings.max_pdf_pages, max_text_chars=settings.max_text_chars,
            trim=settings.trim_long_media, pdf_timeout_s=settings.pdf_timeout_s,
        )


def _why(exc: BaseException) -> str:
    text = f"{exc.__class__.__name__}: {exc}".strip()
    return text if len(text) <= _ERROR_TEXT_CAP else text[: _ERROR_TEXT_CAP - 3] + "..."


# ---------------------------------------------------------------------------------------------------------
# audio


def _mutagen_audio(path: str, mime: str | None):
    """The mutagen reader for the sniffed type: mutagen's own guess needs the file name (an MP3 without an
    ID3 tag, an ADTS .aac under another name would not be recognised)."""
    import mutagen
    from mutagen.aac import AAC
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggflac import OggFLAC
    from mutagen.oggopus import OggOpus
    from mutagen.oggspeex import OggSpeex
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE

    by_mime = {"audio/wav": WAVE, "audio/mp3": MP3, "audio/mpeg": MP3, "audio/flac": FLAC, "audio/mp4": MP4,
               "audio/aac": AAC}
    if mime in by_mime:
        return by_mime[mime](path)
    if mime == "audio/ogg":
        found = mutagen.File(path, options=[OggOpus, OggVorbis, OggFLAC, OggSpeex])
        if found is None:
            raise MediaError("not a readable Ogg audio stream (Opus, Vorbis, FLAC or Speex)", kind=ErrorKind.CORRUPT)
        return found
    found = mutagen.File(path)
    if found is None:
        raise MediaError(f"not a readable audio file ({mime})", kind=ErrorKind.CORRUPT)
    return found


_CODEC_BY_CLASS = {"WAVE": "pcm", "MP3": "mp3", "FLAC": "flac", "AAC": "aac", "OggOpus": "opus",
                   "OggVorbis": "vorbis", "OggFLAC": "flac", "OggSpeex": "speex"}


def read_audio(path: str | os.PathLike[str], mime: str | None = None) -> dict[str, Any]:
    """Duration and format from the header. Raises MediaError (corrupt, empty)."""
    try:
        audio = _mutagen_audio(os.fspath(path), mime)
        info = audio.info
        seconds = float(info.length)
    except MediaError:
        raise
    except Exception as exc:  # mutagen raises its own error types, and worse on odd input
        raise MediaError(f"cannot read the audio header: {_why(exc)}", kind=ErrorKind.CORRUPT) from None
    if not seconds > 0:
        raise MediaError("the audio has no samples (duration 0 s)", kind=ErrorKind.EMPTY)
    codec = _CODEC_BY_CLASS.get(type(audio).__name__)
    if codec is None:
        codec = str(getattr(info, "codec", "") or type(audio).__name__).lower()
    return {
        "kind": "audio",
        "seconds": seconds,
        "codec": codec,
        "sample_rate": int(getattr(info, "sample_rate", 0) or 0) or None,
        "channels": int(getattr(info, "channels", 0) or 0) or None,
    }


def audio_seconds(path: str | os.PathLike[str], mime: str | None = None) -> float | None:
    try:
        return read_audio(path, mime)["seconds"]
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------------------
# video

_EBML_HEADER = 0x1A45DFA3
_EBML_DOCTYPE = 0x4282
_MKV_SEGMENT = 0x18538067
_MKV_INFO = 0x1549A966
_MKV_TIMECODE_SCALE = 0x2AD7B1
_MKV_DURATION = 0x4489
_MKV_CLUSTER = 0x1F43B675


def _ebml_vint(fh, keep_marker: bool) -> tuple[int, int] | None:
    """(value, bytes read) of an EBML variable-size integer; value -1 means 'unknown size'."""
    first = fh.read(1)
    if not first:
        return None
    b = first[0]
    length = 1
    while length <= 8 and not b & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        return None
    rest = fh.read(length - 1)
    if len(rest) != length - 1:
        return None
    value = b if keep_marker else b & (0xFF >> length)
    for c in rest:
        value = (value << 8) | c
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


def _ebml_element(fh) -> tuple[int, int] | None:
    ident = _ebml_vint(fh, keep_marker=True)
    size = _ebml_vint(fh, keep_marker=False)
    if ident is None or size is None:
        return None
    return ident[0], size[0]


def _webm_seconds(path: str, max_elements: int = 4096) -> float:
    """Segment > Info > Duration x TimecodeScale, by skipping from element to element (no decode)."""
    with open(path, "rb") as fh:
        head = _ebml_element(fh)
        if head is None or head[0] != _EBML_HEADER or head[1] < 0:
            raise MediaError("not an EBML (WebM/Matroska) file", kind=ErrorKind.CORRUPT)
        header = fh.read(head[1])
        if b"webm" not in header and b"matroska" not in header:
            raise MediaError("an EBML file that is neither WebM nor Matroska", kind=ErrorKind.CORRUPT)
        seg = _ebml_element(fh)
        if seg is None or seg[0] != _MKV_SEGMENT:
            raise MediaError("the WebM file has no segment", kind=ErrorKind.CORRUPT)
        seg_end = None if seg[1] < 0 else fh.tell() + seg[1]
        for _ in range(max_elements):
            if seg_end is not None and fh.tell() >= seg_end:
                break
            el = _ebml_element(fh)
            if el is None:
                break
            ident, size = el
            if ident == _MKV_CLUSTER or size < 0:
                break  # media data starts: the header (Info) comes before it
            if ident != _MKV_INFO:
                fh.seek(size, os.SEEK_CUR)
                continue
            body_end = fh.tell() + size
            scale, duration = 1_000_000, None
            while fh.tell() < body_end:
                child = _ebml_element(fh)
                if child is None or child[1] < 0:
                    break
                cid, csize = child
                data = fh.read(csize)
                if cid == _MKV_TIMECODE_SCALE and 0 < csize <= 8:
                    scale = int.from_bytes(data, "big") or 1_000_000
                elif cid == _MKV_DURATION and csize in (4, 8):
                    duration = struct.unpack(">f" if csize == 4 else ">d", data)[0]
            if duration is None or not duration > 0:
                break
            return duration * scale / 1e9
    raise MediaError("the WebM header gives no duration (e.g. a live recording): its cost cannot be known "
                     "in advance", kind=ErrorKind.UNKNOWN_DURATION)


def read_video(path: str | os.PathLike[str], mime: str | None = None) -> dict[str, Any]:
    """Duration from the container header (MP4/MOV: mvhd via mutagen; WebM: EBML Info). Raises MediaError."""
    path = os.fspath(path)
    try:
        if mime == "video/webm":
            seconds, codec = _webm_seconds(path), "webm"
        else:
            from mutagen.mp4 import MP4

            seconds = float(MP4(path).info.length)
            codec = "quicktime" if mime == "video/quicktime" else "mp4"
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot read the video header: {_why(exc)}", kind=ErrorKind.CORRUPT) from None
    if not seconds > 0:
        raise MediaError("the video header gives a duration of 0 s", kind=ErrorKind.EMPTY)
    return {"kind": "video", "seconds": seconds, "codec": codec}


def video_seconds(path: str | os.PathLike[str], mime: str | None = None) -> float | None:
    try:
        return read_video(path, mime)["seconds"]
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------------------
# PDF


def _with_timeout(fn: Callable[[], P], timeout_s: float, what: str) -> P:
    """Run fn in a daemon thread; give up after timeout_s (a pathological file must not hang the run).

    A thread cannot be killed: on timeout it is left to finish on its own, as a daemon it never blocks exit.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="enrich-media-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise MediaError(f"reading {what} took longer than {timeout_s:g} s; giving up", kind=ErrorKind.TIMEOUT)
    if "error" in box:
        raise box["error"]
    return box["value"]


def _pdf_page_count(path: str) -> int:
    from pypdf import PdfReader

    reader = PdfReader(path, strict=False)
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")  # owner-password-only PDFs open with an empty user password
        except Exception:
            opened = 0
        if not opened:
            raise MediaError("the PDF is encrypted (password-protected); it cannot be read", kind=ErrorKind.ENCRYPTED)
    return len(reader.pages)


def read_pdf(path: str | os.PathLike[str], *, timeout_s: float = default("pdf_timeout_s"),
             max_bytes: int = PDF_MAX_BYTES) -> dict[str, Any]:
    """Page count from the page tree. Raises MediaError: too_large, truncated, encrypted, corrupt, empty,
    timeout. pypdf runs non-strict in a guarded thread; nothing it raises escapes as anything but a MediaError.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(max(0, size - 2048))
            tail = fh.read()
    except OSError as exc:
        raise MediaError(f"cannot read the PDF: {_why(exc)}", kind=ErrorKind.UNREADABLE) from None
    if size > max_bytes:
        raise MediaError(f"the PDF is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB",
                         kind=ErrorKind.TOO_LARGE)
    if not head.startswith(b"%PDF-"):
        raise MediaError("not a PDF (no %PDF- header)", kind=ErrorKind.CORRUPT)
    if b"%%EOF" not in tail:
        raise MediaError("the PDF ends early (no %%EOF marker): the file is truncated", kind=ErrorKind.TRUNCATED)
    try:
        pages = _with_timeout(lambda: _pdf_page_count(path), timeout_s, "the PDF")
    except MediaError:
        raise
    except RecursionError:
        raise MediaError("the PDF's page tree is nested too deeply (or loops)", kind=ErrorKind.CORRUPT) from None
    except Exception as exc:
        raise MediaError(f"unreadable PDF: {_why(exc)}", kind=ErrorKind.CORRUPT) from None
    if pages <= 0:
        raise MediaError("the PDF has no pages", kind=ErrorKind.EMPTY)
    return {"kind": "pdf", "pages": int(pages)}


def pdf_pages(path: str | os.PathLike[str], timeout_s: float = default("pdf_timeout_s")) -> int | None:
    try:
        return read_pdf(path, timeout_s=timeout_s)["pages"]
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------------------
# text (plain, Markdown, HTML)


def _scan_text(path: str) -> tuple[str, int]:
    """(encoding, characters), streamed in 1 MiB blocks so memory stays flat for any size: UTF-8 (BOM allowed)
    when the whole file is UTF-8, else cp1252 (legacy text the sniffer lets through; one character a byte)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    total = 0
    try:
        with open(path, "rb") as fh:
            while block := fh.read(_TEXT_BLOCK):
                total += len(decoder.decode(block))
        total += len(decoder.decode(b"", final=True))
        return "utf-8-sig", total
    except UnicodeDecodeError:
        return "cp1252", os.path.getsize(path)


def count_text_chars(path: str | os.PathLike[str]) -> int:
    """Characters of the decoded text (what a text part of it costs: about 4 characters a token)."""
    return _scan_text(os.fspath(path))[1]


def read_text(path: str | os.PathLike[str], max_chars: int | None = None) -> tuple[str, int]:
    """(text, total characters): the decoded text, cut to max_chars when given. Raises MediaError."""
    path = os.fspath(path)
    try:
        encoding, total = _scan_text(path)
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        parts: list[str] = []
        got = 0
        with open(path, "rb") as fh:
            while (max_chars is None or got < max_chars) and (block := fh.read(_TEXT_BLOCK)):
                piece = decoder.decode(block)
                parts.append(piece)
                got += len(piece)
            parts.append(decoder.decode(b"", final=True))
    except OSError as exc:
        raise MediaError(f"cannot read the text: {_why(exc)}", kind=ErrorKind.UNREADABLE) from None
    text = "".join(parts)
    if max_chars is not None:
        text = text[:max_chars]
    if not text.strip():
        raise MediaError("the text file is blank", kind=ErrorKind.EMPTY)
    return text, total


def text_chars(path: str | os.PathLike[str]) -> int | None:
    try:
        return count_text_chars(path)
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------------------
# one entry point for the estimator


def probe(path: str | os.PathLike[str], kind: str | None, mime: str | None, *,
          pdf_timeout_s: float = default("pdf_timeout_s")) -> dict[str, Any] | None:
    """The info dict of an audio, video or document file (see the module docstring); None when the file
    cannot be read (it will become an error row) or is an image (see tasks/prepare_image.read_image_meta)."""
    try:
        if kind == "audio":
            return read_audio(path, mime)
        if kind == "video":
            return read_video(path, mime)
        if kind == "document" and mime == "application/pdf":
            return read_pdf(path, timeout_s=pdf_timeout_s)
        if kind == "document":
            return {"kind": "text", "chars": count_text_chars(path)}
    except Exception:
        return None
    return None


def apply_limits(info: dict[str, Any], limits: MediaLimits) -> dict[str, Any]:
    """The info of what will be sent: unchanged, or trimmed (WAV audio, text) when the user opted in.
    Raises MediaError(kind=ErrorKind.TOO_LONG) with the reason when the file is over a limit."""
    kind = info.get("kind")
    if kind == "audio" and info["seconds"] > limits.max_audio_seconds:
        limit = limits.max_audio_seconds
        if limits.trim and info.get("codec") == "pcm":
            return {**info, "seconds": float(limit), "trimmed": True}
        why = f"the audio lasts {info['seconds']:.0f} s; the limit is {limit:g} s (max_audio_seconds)"
        if limits.trim:
            why += f"; only WAV can be trimmed without a decoder, this is {info.get('codec')}"
        else:
            why += "; set trim_long_media = true to send the first part of WAV files"
        raise MediaError(why, kind=ErrorKind.TOO_LONG)
    if kind == "video" and info["seconds"] > limits.max_video_seconds:
        raise MediaError(f"the video lasts {info['seconds']:.0f} s; the limit is {limits.max_video_seconds:g} s "
                         "(max_video_seconds)", kind=ErrorKind.TOO_LONG)
    if kind == "pdf" and info["pages"] > limits.max_pdf_pages:
        raise MediaError(f"the PDF has {info['pages']} pages; the limit is {limits.max_pdf_pages} "
                         "(max_pdf_pages)", kind=ErrorKind.TOO_LONG)
    if kind == "text" and info["chars"] > limits.max_text_chars:
        if limits.trim:
            return {**info, "chars": limits.max_text_chars, "trimmed": True}
        raise MediaError(f"the text has {info['chars']} characters; the limit is {limits.max_text_chars} "
                         "(max_text_chars; trim_long_media = true sends the beginning)", kind=ErrorKind.TOO_LONG)
    return info


def media_tokens(info: dict[str, Any], model: str, resolution: str) -> tuple[int, int]:
    """(tokens of the media part, of which may be billed at the audio rate) by the documented rules.

    A video's soundtrack (32 tokens/s) is counted in the second figure too: a provider may report it as
    AUDIO, and budget reservations price that share at the higher of the two input rates.
    """
    kind = info.get("kind")
    if kind == "image":
        return image_tokens(model, info["width"], info["height"], resolution), 0
    if kind == "audio":
        n = audio_tokens(model, info.get("seconds") or 0)
        return n, n
    if kind == "video":
        seconds = info.get("seconds") or 0
        n = video_tokens(model, seconds, resolution)
        return n, min(n, video_audio_tokens(model, seconds))
    if kind == "pdf":
        return pdf_tokens(model, int(info.get("pages") or 0), resolution), 0
    if kind == "text":
        return text_chars_tokens(int(info.get("chars") or 0)), 0
    return int(info.get("tokens", 0)), 0


def input_tokens_for(info: dict[str, Any], model: str, resolution: str, prompt: str,
                     schema: type[BaseModel] | None) -> tuple[int, int]:
    """(input tokens of one request, of which audio): the prompt, the response schema, the media and, for a
    document, the untrusted-content system instruction."""
    media, audio = media_tokens(info, model, resolution)
    return prompt_tokens(prompt, schema, documents=info.get("kind") in ("pdf", "text")) + media, audio
