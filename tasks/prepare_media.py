"""Preparing audio, video and documents: read the header, apply the limits, hand the backend a media part.

Audio, video and PDFs are not re-encoded: their part points at the file (`MediaPart.path`) and the backend
reads it inline or uploads it through the Files API at send time, so a chunk never holds hundreds of MB of
media in memory. Text documents are decoded here (UTF-8, or cp1252 for legacy files) and sent as UTF-8
text. Over-long WAV audio is cut to the limit when the user opts in (`trim_long_media`): a new RIFF header
and the first samples, copied to a temporary file that is deleted once the item is done.

Personal metadata (tags, a phone video's location, a PDF's author and XMP) is removed before upload unless the
user opts in (`strip_metadata = false`, `--keep-metadata`): tasks/strip_metadata.py writes a stripped
temporary copy and the part points at it (no copy when the file carries no metadata). Temporary copies are
deleted by `PreparedItem.release()` once the item's row is written, else when the item is garbage-collected
(also on error or interruption), or at exit; a killed process's copies are removed by the next run (see
`strip_metadata.media_temp_dir`).

Every failure is a `MediaError` with a kind and a reason (see tasks/media_info.py); a limit error carries
the header facts (`.meta`) so the row still says how long or how many pages the file was.
"""
from __future__ import annotations

import os
import struct
import weakref
from pathlib import Path
from typing import Any

from enrich.schemas.vocab import ErrorKind
from enrich.backends.base import MediaPart
from enrich.errors import MediaError
from enrich.tasks.discover import DiscoveredFile
from enrich.tasks.media_info import MediaLimits, apply_limits, read_audio, read_pdf, read_text, read_video
from enrich.tasks.strip_metadata import new_temp_file, strip_metadata, unlink_quietly
from enrich.tasks.prepared import PreparedItem, PrepareOptions

_COPY_BLOCK = 1 << 20


def _limited(info: dict[str, Any], limits: MediaLimits, meta: dict[str, Any]) -> dict[str, Any]:
    try:
        return apply_limits(info, limits)
    except MediaError as exc:
        exc.meta = meta  # type: ignore[attr-defined]  # the row of a refused file still gets its facts
        raise


def _item(file: DiscoveredFile, media: MediaPart, meta: dict[str, Any], hint: dict[str, Any]) -> "PreparedItem":
    return PreparedItem(file=file, media=(media,), meta=meta, media_tokens_hint=hint)


def _temp_item(file: DiscoveredFile, mime: str, temp: Path, meta: dict[str, Any],
               hint: dict[str, Any]) -> "PreparedItem":
    """An item sent from a temporary copy, which is deleted when the item is done (or at exit)."""
    try:
        item = _item(file, MediaPart(mime=mime, path=temp), meta, hint)
    except BaseException:
        unlink_quietly(temp)
        raise
    item.cleanups.append(weakref.finalize(item, unlink_quietly, str(temp)))  # runs once: release(), GC or exit
    return item


def _file_item(file: DiscoveredFile, mime: str, options: "PrepareOptions", meta: dict[str, Any],
               hint: dict[str, Any]) -> "PreparedItem":
    """An item sent from the file itself, or from a copy without its metadata (unless the user keeps it)."""
    if not options.keep_metadata:
        stripped = strip_metadata(file.path, mime, timeout_s=options.limits.pdf_timeout_s)
        if stripped is not None:
            return _temp_item(file, mime, stripped, meta, hint)
    # sent as it is: checked again when it is read to be sent
    expect = (file.size, file.mtime_ns, file.inode) if file.inode is not None else None
    return _item(file, MediaPart(mime=mime, path=Path(file.path), expect=expect), meta, hint)


def prepare_audio(file: DiscoveredFile, options: "PrepareOptions") -> "PreparedItem":
    info = read_audio(file.path, file.mime)
    meta = {"duration_s": info["seconds"], "media_format": info["codec"], "sample_rate": info["sample_rate"],
            "channels": info["channels"], "trimmed": False}
    sent = _limited(info, options.limits, meta)
    if not sent.get("trimmed"):
        return _file_item(file, file.mime or "audio/wav", options, meta, sent)
    trimmed = trim_wav(file.path, sent["seconds"])  # fmt and data chunks only: no tags to strip
    meta["trimmed"] = True
    return _temp_item(file, "audio/wav", trimmed, meta, sent)


def prepare_video(file: DiscoveredFile, options: "PrepareOptions") -> "PreparedItem":
    info = read_video(file.path, file.mime)
    meta = {"duration_s": info["seconds"], "media_format": info["codec"]}
    sent = _limited(info, options.limits, meta)
    return _file_item(file, file.mime or "video/mp4", options, meta, sent)


def prepare_document(file: DiscoveredFile, options: "PrepareOptions") -> "PreparedItem":
    limits = options.limits
    if file.mime == "application/pdf":
        info = read_pdf(file.path, timeout_s=limits.pdf_timeout_s)
        meta = {"page_count": info["pages"], "media_format": "pdf"}
        sent = _limited(info, limits, meta)
        return _file_item(file, "application/pdf", options, meta, sent)
    # plain text, Markdown, HTML: read no more than the limit allows (plus one character to see it is over)
    text, total = read_text(file.path, max_chars=limits.max_text_chars + 1)
    meta = {"char_count": total, "media_format": "text", "trimmed": False}
    sent = _limited({"kind": "text", "chars": total}, limits, meta)
    if sent.get("trimmed"):
        text = text[: limits.max_text_chars]
        meta["trimmed"] = True
    data = text.encode("utf-8")
    return _item(file, MediaPart(mime=file.mime or "text/plain", data=data), meta, {"kind": "text", "chars": len(text)})


# ---------------------------------------------------------------------------------------------------------
# WAV trimming without a decoder: PCM (and every block-aligned WAV codec) is cut at a frame boundary.


def _riff_chunks(fh) -> list[tuple[bytes, int, int]]:
    """(id, data offset, size) of each top-level chunk of a RIFF/WAVE file."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise MediaError("not a RIFF/WAVE file", kind=ErrorKind.CORRUPT)
    chunks = []
    end = os.fstat(fh.fileno()).st_size
    pos = 12
    while pos + 8 <= end:
        fh.seek(pos)
        ident, size = struct.unpack("<4sI", fh.read(8))
        chunks.append((ident, pos + 8, size))
        if ident == b"data":
            break
        pos += 8 + size + (size & 1)
    return chunks


def trim_wav(path: str | os.PathLike[str], seconds: float) -> Path:
    """A temporary WAV holding the first `seconds` of `path` (fmt chunk kept, other chunks such as LIST tags
    dropped). The caller deletes it."""
    with open(path, "rb") as src:
        chunks = {ident: (offset, size) for ident, offset, size in _riff_chunks(src)}
        if b"fmt " not in chunks or b"data" not in chunks:
            raise MediaError("the WAV has no fmt or data chunk", kind=ErrorKind.CORRUPT)
        fmt_offset, fmt_size = chunks[b"fmt "]
        src.seek(fmt_offset)
        fmt = src.read(fmt_size)
        if len(fmt) < 16:
            raise MediaError("the WAV fmt chunk is too short", kind=ErrorKind.CORRUPT)
        rate, = struct.unpack_from("<I", fmt, 4)
        block_align, = struct.unpack_from("<H", fmt, 12)
        if not rate or not block_align:
            raise MediaError("the WAV fmt chunk gives no sample rate", kind=ErrorKind.CORRUPT)
        data_offset, data_size = chunks[b"data"]
        keep = min(data_size, int(seconds * rate) * block_align)
        tmp_name = str(new_temp_file(suffix=".wav", prefix="enrich-trim-"))
        try:
            with open(tmp_name, "wb") as out:
                fmt_chunk = b"fmt " + struct.pack("<I", len(fmt)) + fmt + (b"\x00" if len(fmt) & 1 else b"")
                riff_size = 4 + len(fmt_chunk) + 8 + keep + (keep & 1)
                out.write(b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + fmt_chunk)
                out.write(b"data" + struct.pack("<I", keep))
                src.seek(data_offset)
                left = keep
                while left > 0:
                    block = src.read(min(_COPY_BLOCK, left))
                    if not block:
                        raise MediaError("the WAV data ends before its stated size", kind=ErrorKind.TRUNCATED)
                    out.write(block)
                    left -= len(block)
                if keep & 1:
                    out.write(b"\x00")
        except BaseException:
            unlink_quietly(tmp_name)
            raise
    return Path(tmp_name)
