"""Removing personal metadata from audio, video and PDFs before upload, without decoding them.

Photos are re-encoded (tasks/prepare_image.py), so their metadata never reaches the new bytes. Audio, video
and PDFs are sent as files: `strip_metadata(path, mime)` writes a temporary copy without their tags and
returns its path, or None when the file carries nothing to remove (a cheap header check; the original is
then sent as it is). Samples and frames are never decoded; each format is handled at the container level:

- MP3, AAC (ADTS): the ID3v2 tags in front, ID3v1 / APEv2 / Lyrics3 tags at the end are left out of the copy.
- FLAC: only STREAMINFO, SEEKTABLE and CUESHEET blocks are kept (Vorbis comments, pictures, application
  blocks and any ID3 tags go); the frames are copied as they are.
- Ogg (Opus, Vorbis, FLAC, Speex): the comment packet is emptied by mutagen (the encoder's vendor string stays).
- WAV: a new RIFF with only the fmt, fact and data chunks (LIST/INFO, id3, bext, iXML, XMP chunks go).
- MP4, M4A, MOV: user data and metadata boxes (moov/udta with a phone's `©xyz` location, make, model and
  software; moov/meta with Apple's `mdta` keys and the iTunes `ilst` tags; the same under each track; top-level
  `uuid` XMP) become `free` boxes of the same size with zeroed content, so no sample offset moves; the creation
  and modification times of mvhd/tkhd/mdhd are zeroed; `free`/`skip` boxes with leftover bytes are zeroed;
  the samples of timed metadata tracks (handler `meta` or `camm`: a GoPro's GPS, an iPhone's mebx, Google's
  camera motion) are zeroed in mdat, found through their sample tables; the tracks themselves stay.
- WebM / Matroska: Tags and Attachments, and the Title and DateUTC of the segment Info, become Void elements of
  the same size (zeroed). The muxing and writing application names stay (software, not personal).
- PDF: rewritten by pypdf without the document information dictionary (/Info: Author, Creator, Producer,
  dates), without XMP metadata streams (/Metadata on the catalog, pages, images, fonts) and private
  application data (/PieceInfo); earlier revisions of an incrementally saved file are dropped with them.
  Embedded JPEGs (/DCTDecode: a scan or a photo made into a PDF carries the camera's JPEG) lose their APPn
  segments (EXIF with GPS and serials, XMP, ICC, maker notes) and comments, byte for byte otherwise (JFIF and
  Adobe segments stay: CMYK colours need the latter); annotations lose their authors and dates (/T, /M,
  /CreationDate; a form field's /T is its name and stays). Whether a PDF needs this is decided by parsing it.

Not removed: subtitle tracks (some drones write their GPS as subtitles: they are content to this module),
metadata samples of fragmented MP4 (moof) files, what is in the picture or the sound, the text and
annotation contents of a PDF (content, not metadata).

A copy that cannot be made is a `MediaError` with kind `metadata_strip_failed`: the item is not sent, since
sending personal data silently would be worse than one error row. Copies live in this process's folder
(`media_temp_dir()`), readable by the user only; the caller deletes each copy once its item is done, the
folder goes at exit, and folders of processes that were killed are removed at the start of the next run
(`sweep_media_temp`: by owner and a lock each live process holds, never by host name).
"""
from __future__ import annotations

import atexit
import os
import shutil
import stat
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from enrich.errors import MediaError
from enrich.settings import default

__all__ = ["STRIP_FAILED", "strip_metadata", "media_temp_dir", "new_temp_file", "sweep_media_temp", "unlink_quietly"]

STRIP_FAILED = "metadata_strip_failed"
_BLOCK = 1 << 20


def strip_metadata(path: str | os.PathLike[str], mime: str | None, *, timeout_s: float = default("pdf_timeout_s")) -> Path | None:
    """A temporary copy of `path` without its personal metadata, or None when there is nothing to remove.

    The caller deletes the copy (see `unlink_quietly`). Raises MediaError(kind=`metadata_strip_failed`) when
    the file cannot be stripped, including for a type with no stripper (never silently sent as it is).
    `timeout_s` bounds the PDF rewrite (a pathological file must not hang the run).
    """
    src = os.fspath(path)
    stripper = _STRIPPERS.get(mime or "")
    if stripper is None:
        raise MediaError(f"no metadata stripper for {mime} files; not sent (use --keep-metadata to send "
                         f"originals)", kind=STRIP_FAILED)
    try:
        return stripper(src, timeout_s)
    except Exception as exc:  # odd input or a parser bug: refuse rather than send the original
        why = str(exc) if isinstance(exc, MediaError) else f"{exc.__class__.__name__}: {_short(exc)}"
        raise MediaError(f"could not strip the metadata ({why}); not sent", kind=STRIP_FAILED) from None


def _short(exc: BaseException, cap: int = 160) -> str:
    text = str(exc)
    return text if len(text) <= cap else text[: cap - 3] + "..."


# ---------------------------------------------------------------------------------------------------------
# temporary copies: <tmp>/enrich-media-<uid>/<pid>-<random>/, mode 0700, each held by its process's lock

STALE_AFTER_S = 6 * 3600.0  # a folder without a lock file (an older enrich's) is swept after this long
_ALIVE = ".alive"  # locked (flock) by the process that owns the folder, for as long as it lives

_dirs: dict[int, Path] = {}
_alive_fds: dict[int, int] = {}
_dirs_lock = threading.Lock()


def media_root() -> Path:
    return Path(tempfile.gettempdir()) / f"enrich-media-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def media_temp_dir() -> Path:
    """This process's folder for temporary media copies (created on first use, removed at exit)."""
    pid = os.getpid()
    with _dirs_lock:
        folder = _dirs.get(pid)
        if folder is not None and folder.is_dir():
            return folder
        root = media_root()
        if _private_dir(root):
            sweep_media_temp(root)
            folder = Path(tempfile.mkdtemp(prefix=f"{pid}-", dir=root))
        else:  # someone else owns the shared name: a fresh private folder, nothing to sweep
            folder = Path(tempfile.mkdtemp(prefix="enrich-media-"))
        _hold(folder, pid)
        atexit.register(shutil.rmtree, folder, True)
        _dirs[pid] = folder
        return folder


def _hold(folder: Path, pid: int) -> None:
    """Lock the folder's `.alive` file for this process's life (the kernel releases it when the process dies,
    however it dies), so a sweep by another run never takes a live run's copies."""
    try:
        import fcntl
    except ImportError:  # no flock: the age rule alone protects the folder
        return
    fd = os.open(folder / _ALIVE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return
    old = _alive_fds.pop(pid, None)
    if old is not None:
        os.close(old)
    _alive_fds[pid] = fd


def _held(folder: Path) -> bool | None:
    """True: a live process holds the folder; False: its lock is free (its process died); None: no lock file."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(folder / _ALIVE, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError:
        return True  # cannot tell: leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _newest_mtime(folder: Path) -> float:
    newest = os.lstat(folder).st_mtime
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
                except OSError:
                    continue
    except OSError:
        pass
    return newest


def sweep_media_temp(root: Path | None = None, *, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the copies that killed runs left behind, by owner and liveness (not by host name): every folder
    of this user whose lock no live process holds; a folder without a lock (an older enrich's, or a lock that
    a network file system lost) once nothing in it changed for `stale_after_s`. Called at every run's start.
    Returns what it removed."""
    root = media_root() if root is None else root
    if not _private_dir(root, create=False):
        return []
    removed = []
    now = time.time()
    uid = os.getuid() if hasattr(os, "getuid") else None
    own = _dirs.get(os.getpid())
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for entry in entries:
        try:
            st = os.lstat(entry)
        except OSError:
            continue
        if entry == own or (uid is not None and st.st_uid != uid):
            continue
        if not stat.S_ISDIR(st.st_mode):
            if now - st.st_mtime > stale_after_s:
                unlink_quietly(entry)
                removed.append(entry)
            continue
        held = _held(entry)
        if held is False or (held is None and now - _newest_mtime(entry) > stale_after_s):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def new_temp_file(suffix: str = "", prefix: str = "enrich-") -> Path:
    """An empty file (mode 0600) in `media_temp_dir()`; the caller deletes it."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=media_temp_dir())
    os.close(fd)
    return Path(name)


def unlink_quietly(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _private_dir(root: Path, *, create: bool = True) -> bool:
    """`root` exists (or is created) as a real folder owned by this user and private to it."""
    try:
        if create:
            root.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(root)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o077):
        return False
    return True


def _copy_range(src: BinaryIO, dst: BinaryIO, offset: int, count: int) -> None:
    """Copy `count` bytes of `src` from `offset` to the current end of `dst`, in the kernel where possible."""
    dst.flush()
    left = count
    if hasattr(os, "copy_file_range"):
        try:
            in_off = offset
            while left > 0:
                n = os.copy_file_range(src.fileno(), dst.fileno(), min(left, 1 << 30), in_off)
                if n == 0:
                    break
                in_off += n
                left -= n
            dst.seek(0, os.SEEK_END)
        except OSError:  # another file system, an old kernel: copy through Python from where it stopped
            dst.seek(0, os.SEEK_END)
    if left > 0:
        src.seek(offset + (count - left))
        while left > 0:
            block = src.read(min(_BLOCK, left))
            if not block:
                break
            dst.write(block)
            left -= len(block)
    if left > 0:
        raise MediaError("the file ends before its stated size", kind=STRIP_FAILED)


def _write_copy(src_path: str, suffix: str, write: Callable[[BinaryIO, BinaryIO], None]) -> Path:
    """A new temporary file filled by `write(src, dst)`; deleted again if anything fails."""
    out = new_temp_file(suffix=suffix)
    try:
        with open(src_path, "rb") as src, open(out, "r+b") as dst:
            write(src, dst)
    except BaseException:
        unlink_quietly(out)
        raise
    return out


@dataclass(frozen=True)
class _Patch:
    """Overwrite at `offset`: `data`, then `zeros` zero bytes."""

    offset: int
    data: bytes
    zeros: int = 0


def _patched_copy(src_path: str, patches: list[_Patch]) -> Path:
    """A full copy (kernel copy) with `patches` written over it: same size, every offset unchanged."""
    out = new_temp_file(suffix=Path(src_path).suffix)
    try:
        shutil.copyfile(src_path, out)
        zero_block = bytes(min(_BLOCK, max((p.zeros for p in patches), default=0)))
        with open(out, "r+b") as fh:
            for p in patches:
                fh.seek(p.offset)
                fh.write(p.data)
                left = p.zeros
                while left > 0:
                    n = min(left, len(zero_block))
                    fh.write(zero_block[:n])
                    left -= n
    except BaseException:
        unlink_quietly(out)
        raise
    return out


def _all_zero(fh: BinaryIO, offset: int, count: int) -> bool:
    fh.seek(offset)
    while count > 0:
        block = fh.read(min(_BLOCK, count))
        if not block:
            return True
        if block.count(0) != len(block):
            return False
        count -= len(block)
    return True


# ---------------------------------------------------------------------------------------------------------
# MP3, AAC, and the tags other formats borrow from them (ID3v2 in front, ID3v1/APEv2/Lyrics3 at the end)


def _syncsafe(b: bytes) -> int:
    return (b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3]


def _leading_id3(fh: BinaryIO, start: int = 0) -> int:
    """Offset after the ID3v2 tags at `start` (several may be stacked)."""
    while True:
        fh.seek(start)
        head = fh.read(10)
        if len(head) < 10 or head[:3] != b"ID3" or head[3] == 0xFF or any(b & 0x80 for b in head[6:10]):
            return start
        start += 10 + _syncsafe(head[6:10]) + (10 if head[5] & 0x10 else 0)


def _trailing_tags(fh: BinaryIO, start: int, end: int) -> int:
    """Offset where the tags at the end begin (ID3v1 and its TAG+ extension, APEv2, Lyrics3v2, ID3v2 with a
    footer), in any order they were appended."""
    while True:
        before = end
        if end - 128 >= start:
            fh.seek(end - 128)
            if fh.read(3) == b"TAG":
                end -= 128
                if end - 227 >= start:
                    fh.seek(end - 227)
                    if fh.read(4) == b"TAG+":
                        end -= 227
        if end - 32 >= start:
            fh.seek(end - 32)
            footer = fh.read(32)
            if footer[:8] == b"APETAGEX":
                size, _, flags = struct.unpack("<III", footer[12:24])
                end -= size + (32 if flags & 0x80000000 else 0)
        if end - 15 >= start:
            fh.seek(end - 15)
            tail = fh.read(15)
            if tail[6:] == b"LYRICS200" and tail[:6].isdigit():
                end -= int(tail[:6]) + 15
        if end - 10 >= start:
            fh.seek(end - 10)
            foot = fh.read(10)
            if foot[:3] == b"3DI" and not any(b & 0x80 for b in foot[6:10]):
                end -= _syncsafe(foot[6:10]) + 20
        if end < start:
            raise MediaError("the tags at the end of the file overlap its start", kind=STRIP_FAILED)
        if end == before:
            return end


def _strip_id3_audio(src: str, timeout_s: float) -> Path | None:
    size = os.path.getsize(src)
    with open(src, "rb") as fh:
        start = _leading_id3(fh)
        end = _trailing_tags(fh, start, size)
    if (start, end) == (0, size):
        return None
    return _write_copy(src, Path(src).suffix, lambda s, d: _copy_range(s, d, start, end - start))


# ---------------------------------------------------------------------------------------------------------
# FLAC

_FLAC_KEEP = {0, 3, 5}  # STREAMINFO, SEEKTABLE, CUESHEET
_FLAC_HARMLESS = {1}  # PADDING: dropped from a copy, but no reason to make one


def _strip_flac(src: str, timeout_s: float) -> Path | None:
    size = os.path.getsize(src)
    with open(src, "rb") as fh:
        start = _leading_id3(fh)
        fh.seek(start)
        if fh.read(4) != b"fLaC":
            raise MediaError("not a FLAC stream", kind=STRIP_FAILED)
        pos = start + 4
        kept: list[tuple[int, bytes]] = []
        dropped = False
        while True:
            fh.seek(pos)
            head = fh.read(4)
            if len(head) < 4:
                raise MediaError("the FLAC metadata ends early", kind=STRIP_FAILED)
            last, kind, length = head[0] & 0x80, head[0] & 0x7F, int.from_bytes(head[1:4], "big")
            if kind in _FLAC_KEEP:
                body = fh.read(length)
                if len(body) < length:
                    raise MediaError("the FLAC metadata ends early", kind=STRIP_FAILED)
                kept.append((kind, body))
            elif kind not in _FLAC_HARMLESS:
                dropped = True
            pos += 4 + length
            if last:
                break
        frames = pos
        end = _trailing_tags(fh, frames, size)
    if not kept or kept[0][0] != 0:
        raise MediaError("the FLAC stream has no STREAMINFO block first", kind=STRIP_FAILED)
    if not dropped and start == 0 and end == size:
        return None

    def write(s: BinaryIO, d: BinaryIO) -> None:
        d.write(b"fLaC")
        for i, (kind, body) in enumerate(kept):
            flag = 0x80 if i == len(kept) - 1 else 0
            d.write(bytes([flag | kind]) + len(body).to_bytes(3, "big") + body)
        _copy_range(s, d, frames, end - frames)

    return _write_copy(src, Path(src).suffix, write)


# ---------------------------------------------------------------------------------------------------------
# Ogg (Opus, Vorbis, FLAC, Speex): mutagen rewrites the comment pages in place on a copy


def _strip_ogg(src: str, timeout_s: float) -> Path | None:
    import mutagen
    from mutagen.oggflac import OggFLAC
    from mutagen.oggopus import OggOpus
    from mutagen.oggspeex import OggSpeex
    from mutagen.oggvorbis import OggVorbis

    kinds = [OggOpus, OggVorbis, OggFLAC, OggSpeex]
    found = mutagen.File(src, options=kinds)
    if found is None:
        raise MediaError("not a readable Ogg audio stream", kind=STRIP_FAILED)
    if found.tags is None or len(found.tags) == 0:
        return None
    out = new_temp_file(suffix=Path(src).suffix)
    try:
        shutil.copyfile(src, out)
        copy = type(found)(out)
        copy.delete()
        if copy.__class__(out).tags:
            raise MediaError("the Ogg comments are still there after deleting them", kind=STRIP_FAILED)
    except BaseException:
        unlink_quietly(out)
        raise
    return out


# ---------------------------------------------------------------------------------------------------------
# WAV: a new RIFF with the fmt, fact and data chunks only

_WAV_KEEP = (b"fmt ", b"fact", b"data")


def _strip_wav(src: str, timeout_s: float) -> Path | None:
    size = os.path.getsize(src)
    with open(src, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise MediaError("not a RIFF/WAVE file", kind=STRIP_FAILED)
        chunks: dict[bytes, tuple[int, int]] = {}
        other = False
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            ident, length = struct.unpack("<4sI", fh.read(8))
            if ident == b"data":
                length = min(length, size - pos - 8)  # streamed recordings state 0xFFFFFFFF; cut files less
            if ident in _WAV_KEEP:
                chunks.setdefault(ident, (pos + 8, length))
            else:
                other = True
            pos += 8 + length + (length & 1)
    if b"fmt " not in chunks or b"data" not in chunks:
        raise MediaError("the WAV has no fmt or data chunk", kind=STRIP_FAILED)
    if not other:
        return None

    def write(s: BinaryIO, d: BinaryIO) -> None:
        small = b""
        for ident in (b"fmt ", b"fact"):
            if ident in chunks:
                offset, length = chunks[ident]
                s.seek(offset)
                body = s.read(length)
                small += ident + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")
        data_offset, data_len = chunks[b"data"]
        riff = 4 + len(small) + 8 + data_len + (data_len & 1)
        d.write(b"RIFF" + struct.pack("<I", riff) + b"WAVE" + small + b"data" + struct.pack("<I", data_len))
        _copy_range(s, d, data_offset, data_len)
        if data_len & 1:
            d.write(b"\x00")

    return _write_copy(src, ".wav", write)


# ---------------------------------------------------------------------------------------------------------
# MP4, M4A, MOV (ISO base media / QuickTime): free the metadata boxes in place on a copy

_MP4_DESCEND = {b"moov", b"trak", b"mdia", b"minf"}
_MP4_METADATA = {b"udta", b"meta", b"uuid"}
_MP4_PADDING = {b"free", b"skip"}
_MP4_TIMES = {b"mvhd", b"tkhd", b"mdhd"}


def _mp4_boxes(fh: BinaryIO, start: int, end: int, *, top: bool = False) -> Iterator[tuple[int, bytes, int, int, int]]:
    """(position, type, header length, stated size, end) of each box between start and end.

    A box that states a size past its parent is an error, except at the top level, where it is an
    interrupted recording whose last box is cut short (it ends at the end of the file)."""
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        box_size, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if box_size == 1:
            large = fh.read(8)
            if len(large) < 8:
                return
            box_size, header = struct.unpack(">Q", large)[0], 16
        elif box_size == 0:  # the last box runs to the end of the file
            box_size = end - pos
        if box_size < header:
            raise MediaError(f"an MP4 box {kind!r} states {box_size} bytes", kind=STRIP_FAILED)
        box_end = pos + box_size
        if box_end > end:
            if not top:
                raise MediaError(f"the MP4 box {kind!r} runs past its parent", kind=STRIP_FAILED)
            box_end = end
        yield pos, kind, header, box_size, box_end
        pos = box_end


def _mp4_patches(fh: BinaryIO, size: int) -> list[_Patch]:
    patches: list[_Patch] = []

    def walk(start: int, end: int, top: bool, depth: int) -> None:
        for pos, kind, header, box_size, box_end in _mp4_boxes(fh, start, end, top=top):
            payload = box_end - pos - header
            if kind in _MP4_METADATA:
                free_head = (struct.pack(">I4s", box_size, b"free") if header == 8
                             else struct.pack(">I4sQ", 1, b"free", box_size))
                patches.append(_Patch(pos, free_head, payload))
            elif kind in _MP4_PADDING:
                if not _all_zero(fh, pos + header, payload):
                    patches.append(_Patch(pos + header, b"", payload))
            elif kind in _MP4_TIMES:
                fh.seek(pos + header)
                version = fh.read(1)
                width = 16 if version == b"\x01" else 8
                fh.seek(pos + header + 4)
                times = fh.read(width)
                if times.count(0) != len(times):
                    patches.append(_Patch(pos + header + 4, bytes(len(times))))
            elif kind in _MP4_DESCEND and depth < 8:
                walk(pos + header, box_end, False, depth + 1)
                if kind == b"trak":
                    patches.extend(_Patch(offset, b"", length)
                                   for offset, length in _timed_metadata_samples(fh, pos + header, box_end, size))

    walk(0, size, True, 0)
    return patches


def _mp4_children(fh: BinaryIO, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    """{type: (payload start, payload end)} of the first box of each type between start and end."""
    found: dict[bytes, tuple[int, int]] = {}
    for pos, kind, header, _, box_end in _mp4_boxes(fh, start, end):
        found.setdefault(kind, (pos + header, box_end))
    return found


_MP4_TIMED_METADATA = {b"meta", b"camm"}  # handler types: GoPro GPMF, Apple mebx, Sony rtmd; Google camm
_MP4_MAX_SAMPLES = 10_000_000


def _timed_metadata_samples(fh: BinaryIO, start: int, end: int, file_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each chunk of samples of a timed metadata track (a GoPro's GPS, a phone's motion
    data), read from its sample table; [] for any other track. Zeroing them leaves the track in place."""
    mdia = _mp4_children(fh, start, end).get(b"mdia")
    if mdia is None:
        return []
    boxes = _mp4_children(fh, *mdia)
    if b"hdlr" not in boxes or b"minf" not in boxes:
        return []
    fh.seek(boxes[b"hdlr"][0] + 8)
    if fh.read(4) not in _MP4_TIMED_METADATA:
        return []
    stbl = _mp4_children(fh, *boxes[b"minf"]).get(b"stbl")
    if stbl is None:
        return []
    tables = _mp4_children(fh, *stbl)

    def table(kind: bytes) -> bytes:
        a, b = tables[kind]
        fh.seek(a)
        return fh.read(b - a)

    if b"stsz" not in tables or b"stsc" not in tables or not ({b"stco", b"co64"} & tables.keys()):
        if b"stz2" in tables or b"stsc" in tables:
            raise MediaError("a timed metadata track with a sample table this reader does not know",
                             kind=STRIP_FAILED)
        return []  # no samples in this box (a fragmented file keeps them in moof boxes)
    stsz = table(b"stsz")
    uniform, count = struct.unpack_from(">II", stsz, 4)
    if count > _MP4_MAX_SAMPLES or (not uniform and len(stsz) < 12 + 4 * count):
        raise MediaError("the metadata track's sample sizes are cut short", kind=STRIP_FAILED)
    sizes = [uniform] * count if uniform else list(struct.unpack_from(f">{count}I", stsz, 12))
    if b"co64" in tables:
        co = table(b"co64")
        chunks = list(struct.unpack_from(f">{struct.unpack_from('>I', co, 4)[0]}Q", co, 8))
    else:
        co = table(b"stco")
        chunks = list(struct.unpack_from(f">{struct.unpack_from('>I', co, 4)[0]}I", co, 8))
    stsc = table(b"stsc")
    runs = [struct.unpack_from(">III", stsc, 8 + 12 * i)[:2] for i in range(struct.unpack_from(">I", stsc, 4)[0])]
    ranges: list[tuple[int, int]] = []
    sample = 0
    for r, (first, per_chunk) in enumerate(runs):
        last = runs[r + 1][0] - 1 if r + 1 < len(runs) else len(chunks)
        for chunk in range(first, last + 1):
            if not 0 < chunk <= len(chunks) or sample + per_chunk > count:
                raise MediaError("the metadata track's sample table is inconsistent", kind=STRIP_FAILED)
            length = sum(sizes[sample: sample + per_chunk])
            offset = chunks[chunk - 1]
            if offset + length > file_size:
                raise MediaError("the metadata track's samples lie past the end of the file", kind=STRIP_FAILED)
            ranges.append((offset, length))
            sample += per_chunk
    return [(o, n) for o, n in ranges if n]


def _strip_mp4(src: str, timeout_s: float) -> Path | None:
    size = os.path.getsize(src)
    with open(src, "rb") as fh:
        fh.seek(4)
        if fh.read(4) not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
            raise MediaError("not an MP4/QuickTime file", kind=STRIP_FAILED)
        patches = _mp4_patches(fh, size)
    return _patched_copy(src, patches) if patches else None


# ---------------------------------------------------------------------------------------------------------
# WebM / Matroska: void the tag elements in place on a copy

_EBML_HEADER = 0x1A45DFA3
_MKV_SEGMENT = 0x18538067
_MKV_INFO = 0x1549A966
_MKV_TITLE = 0x7BA9
_MKV_DATE_UTC = 0x4461
_MKV_TAGS = 0x1254C367
_MKV_ATTACHMENTS = 0x1941A469
_MKV_VOID = 0xEC
_MKV_MAX_ELEMENTS = 200_000  # segment children walked (clusters are skipped by size, not read)


def _void(offset: int, total: int) -> _Patch:
    """A Void element covering exactly `total` bytes (the element it replaces, header included)."""
    width = min(8, total - 1)
    zeros = total - 1 - width
    size = ((1 << (7 * width)) | zeros).to_bytes(width, "big")
    return _Patch(offset, bytes([_MKV_VOID]) + size, zeros)


def _webm_patches(fh: BinaryIO) -> list[_Patch]:
    from enrich.tasks.media_info import _ebml_element

    head = _ebml_element(fh)
    if head is None or head[0] != _EBML_HEADER or head[1] < 0:
        raise MediaError("not an EBML (WebM/Matroska) file", kind=STRIP_FAILED)
    fh.seek(head[1], os.SEEK_CUR)
    seg = _ebml_element(fh)
    if seg is None or seg[0] != _MKV_SEGMENT:
        raise MediaError("the WebM file has no segment", kind=STRIP_FAILED)
    seg_end = None if seg[1] < 0 else fh.tell() + seg[1]
    patches: list[_Patch] = []
    for _ in range(_MKV_MAX_ELEMENTS):
        start = fh.tell()
        if seg_end is not None and start >= seg_end:
            break
        el = _ebml_element(fh)
        if el is None:
            break
        ident, size = el
        body = fh.tell()
        if size < 0:
            break  # an unknown-size cluster (a live recording): nothing after it can be found by skipping
        if ident in (_MKV_TAGS, _MKV_ATTACHMENTS):
            patches.append(_void(start, body - start + size))
        elif ident == _MKV_INFO:
            while fh.tell() < body + size:
                child_start = fh.tell()
                child = _ebml_element(fh)
                if child is None or child[1] < 0:
                    break
                child_body = fh.tell()
                if child[0] in (_MKV_TITLE, _MKV_DATE_UTC):
                    patches.append(_void(child_start, child_body - child_start + child[1]))
                fh.seek(child_body + child[1])
        fh.seek(body + size)
    return patches


def _strip_webm(src: str, timeout_s: float) -> Path | None:
    with open(src, "rb", buffering=0) as fh:  # skipping clusters: a few bytes a seek, no read-ahead
        patches = _webm_patches(fh)
    return _patched_copy(src, patches) if patches else None


# ---------------------------------------------------------------------------------------------------------
# PDF: rewritten by pypdf without /Info, XMP streams, private application data, the EXIF/XMP of embedded
# JPEGs and the authors and dates of annotations

_PDF_DROP_KEYS = ("/Metadata", "/PieceInfo")
_PDF_ANNOT_DROP_KEYS = ("/T", "/M", "/CreationDate")  # author (also a popup's), modified, created
_PDF_MAX_OBJECTS = 2_000_000


def _pdf_walk(root: Any, *, limit: int = 1_000_000) -> Iterator[Any]:
    """`root` and the direct (not indirect) dictionaries and arrays nested in it."""
    from pypdf.generic import ArrayObject, DictionaryObject

    stack = [root]
    seen = 0
    while stack and seen < limit:
        item = stack.pop()
        seen += 1
        yield item
        if isinstance(item, DictionaryObject):
            stack.extend(v for v in item.values() if isinstance(v, (DictionaryObject, ArrayObject)))
        elif isinstance(item, ArrayObject):
            stack.extend(v for v in item if isinstance(v, (DictionaryObject, ArrayObject)))


def _is_markup_annotation(obj: Any) -> bool:
    """An annotation whose /T is a person (comments, highlights, popups); a form widget's /T is its field name."""
    subtype = obj.get("/Subtype")
    if subtype is None or str(subtype) in ("/Widget", "/Link"):
        return False
    return str(obj.get("/Type", "/Annot")) == "/Annot" and ("/Rect" in obj or "/Parent" in obj)


def _dct_only(stream: Any) -> bool | None:
    """True: a JPEG stream (/DCTDecode alone); None: DCTDecode in a chain of filters; False: not a JPEG."""
    from pypdf.generic import ArrayObject

    filters = stream.get("/Filter")
    if filters is None:
        return False
    names = [str(f) for f in filters] if isinstance(filters, ArrayObject) else [str(filters)]
    if "/DCTDecode" not in names and "/DCT" not in names:
        return False
    return True if len(names) == 1 else None


_JPEG_KEEP_APP = {0xE0: b"JFIF\x00", 0xEE: b"Adobe"}  # JFIF density; Adobe: needed to decode CMYK/YCCK colours


def strip_jpeg_segments(data: bytes) -> bytes | None:
    """The JPEG without its APPn segments (EXIF, XMP, ICC, maker notes, Photoshop IRB) and comments, keeping
    JFIF and Adobe (colour transform) segments; None when there is nothing to remove. The entropy-coded data
    is copied as it is (no re-encoding). MediaError when the stream is not a well-framed JPEG."""
    if data[:2] != b"\xff\xd8":
        raise MediaError("an embedded JPEG does not start with SOI", kind=STRIP_FAILED)
    out = bytearray(b"\xff\xd8")
    pos, dropped = 2, False
    n = len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise MediaError("an embedded JPEG has bytes between its segments", kind=STRIP_FAILED)
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += bytes([0xFF, marker])
            continue
        if pos + 2 > n:
            raise MediaError("an embedded JPEG ends inside a segment header", kind=STRIP_FAILED)
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + length > n:
            raise MediaError("an embedded JPEG segment runs past its end", kind=STRIP_FAILED)
        segment = data[pos - 2:pos + length]
        if marker == 0xDA:  # start of scan: the rest is image data (and more scans), copied verbatim
            out += data[pos - 2:]
            break
        keep = _JPEG_KEEP_APP.get(marker)
        personal = marker == 0xFE or (0xE0 <= marker <= 0xEF
                                      and not (keep and data[pos + 2:pos + length].startswith(keep)))
        if personal:
            dropped = True
        else:
            out += segment
        pos += length
    return bytes(out) if dropped else None


def _pdf_objects(doc: Any) -> Iterator[Any]:
    """Every object of a reader (through its cross-reference tables, object streams included) or writer."""
    from pypdf import PdfReader

    if isinstance(doc, PdfReader):
        from pypdf.generic import IndirectObject

        refs: dict[int, int] = {}
        for generation, table in doc.xref.items():
            for idnum in table:
                refs.setdefault(idnum, generation)
        for idnum in getattr(doc, "xref_objStm", {}):
            refs.setdefault(idnum, 0)
        if len(refs) > _PDF_MAX_OBJECTS:
            raise MediaError("the PDF has too many objects to check", kind=STRIP_FAILED)
        for idnum, generation in sorted(refs.items()):
            try:
                obj = IndirectObject(idnum, generation, doc).get_object()
            except Exception:
                continue  # a broken entry: nothing the rewrite could reach through it either
            if obj is not None:
                yield obj
    else:
        yield from (o for o in doc._objects if o is not None)


def _pdf_personal(doc: Any, *, fix: bool) -> bool:
    """Whether `doc` (a reader or a writer) holds what we strip; with `fix` (a writer), strip it."""
    from pypdf.generic import DictionaryObject, StreamObject

    found = False
    for obj in _pdf_objects(doc):
        for item in _pdf_walk(obj):
            if not isinstance(item, DictionaryObject):
                continue
            keys = [k for k in _PDF_DROP_KEYS if k in item]
            if _is_markup_annotation(item):
                keys += [k for k in _PDF_ANNOT_DROP_KEYS if k in item]
            if keys:
                found = True
                if not fix:
                    return True
                for key in keys:
                    del item[key]
        if isinstance(obj, StreamObject):
            kind = _dct_only(obj)
            if kind is None:
                raise MediaError("an embedded JPEG under several filters cannot be checked for metadata",
                                 kind=STRIP_FAILED)
            if kind:
                cleaned = strip_jpeg_segments(obj._data)
                if cleaned is not None:
                    found = True
                    if not fix:
                        return True
                    obj._data = cleaned  # written with its new /Length
    return found


def _pdf_has_metadata(src: str) -> bool:
    """Decided by the parser (a trailer key written `/I#6efo` is `/Info`): the document information dictionary,
    earlier revisions (an incremental update keeps the old objects' bytes), XMP streams, /PieceInfo, EXIF/XMP
    segments of embedded JPEGs, annotation authors and dates."""
    from pypdf import PdfReader

    reader = PdfReader(src, strict=False)
    if reader.is_encrypted and not reader.decrypt(""):
        raise MediaError("the PDF is encrypted", kind=STRIP_FAILED)
    trailer = reader.trailer
    if "/Info" in trailer or "/Prev" in trailer or "/XRefStm" in trailer:
        return True
    return _pdf_personal(reader, fix=False)


def _clean_pdf(src: str) -> Any:
    """A pypdf writer holding the document without its metadata (objects nothing refers to are dropped)."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    reader = PdfReader(src, strict=False)
    if reader.is_encrypted and not reader.decrypt(""):
        raise MediaError("the PDF is encrypted", kind=STRIP_FAILED)
    writer = PdfWriter(clone_from=reader, keep_initial_header=True)
    writer.metadata = None  # no /Info in the trailer

    def children(obj: Any) -> list[Any]:
        if isinstance(obj, DictionaryObject):
            return list(obj.values())
        if isinstance(obj, ArrayObject):
            return list(obj)
        return []

    # drop the keys everywhere (in every object and the dictionaries nested directly in it), the authors and
    # dates of annotations, the APPn segments of embedded JPEGs
    _pdf_personal(writer, fix=True)

    # keep only what the catalog still reaches (the XMP streams and the old /Info are left behind)
    reachable: set[int] = set()
    stack = [writer._root_object]
    while stack:
        item = stack.pop()
        if isinstance(item, IndirectObject):
            if item.pdf is not writer or item.idnum in reachable or not 0 < item.idnum <= len(writer._objects):
                continue
            reachable.add(item.idnum)
            stack.append(writer._objects[item.idnum - 1])
            continue
        stack.extend(children(item))
    root_ref = writer._root_object.indirect_reference
    if root_ref is not None:
        reachable.add(root_ref.idnum)
    for i in range(len(writer._objects)):
        if i + 1 not in reachable:
            writer._objects[i] = None
    return writer


def _strip_pdf(src: str, timeout_s: float) -> Path | None:
    from enrich.tasks.media_info import _with_timeout

    if not _with_timeout(lambda: _pdf_has_metadata(src), timeout_s, "the PDF for its metadata"):
        return None
    writer = _with_timeout(lambda: _clean_pdf(src), timeout_s, "the PDF for its metadata")
    out = new_temp_file(suffix=".pdf")
    try:
        with open(out, "wb") as fh:
            writer.write(fh)
    except BaseException:
        unlink_quietly(out)
        raise
    return out


_STRIPPERS: dict[str, Callable[[str, float], Path | None]] = {
    "audio/mp3": _strip_id3_audio,
    "audio/mpeg": _strip_id3_audio,
    "audio/aac": _strip_id3_audio,
    "audio/flac": _strip_flac,
    "audio/ogg": _strip_ogg,
    "audio/wav": _strip_wav,
    "audio/mp4": _strip_mp4,
    "video/mp4": _strip_mp4,
    "video/quicktime": _strip_mp4,
    "video/webm": _strip_webm,
    "application/pdf": _strip_pdf,
}
