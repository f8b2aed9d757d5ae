"""Camera RAW files without demosaicing: find the largest embedded preview JPEG and the RAW's own metadata.

Most RAW formats are TIFF containers that carry one or more JPEG previews beside the sensor data (often a
full-size one): DNG, CR2, NEF, ARW, ORF, RW2, PEF, SRW and the rarer ones. A small IFD reader walks IFD0
and its chain, the SubIFDs and the EXIF IFD, and collects every JPEG it points at:

- `JPEGInterchangeFormat` / `JPEGInterchangeFormatLength` (0x0201/0x0202) in any IFD;
- a single strip compressed as JPEG (Compression 6 or 7, `StripOffsets`/`StripByteCounts`): CR2's IFD0;
- Panasonic's `JpgFromRaw` (0x002E) in RW2's IFD0.

Each candidate's own frame header says its size; lossless JPEG (SOF3, how DNG and CR2 store the sensor
data) is not a preview and is left out. The largest wins. Several makers (Olympus ORF, Pentax PEF, ...) point
at their large preview only from inside the maker note; when the IFDs give nothing of at least
`SCAN_BELOW_PIXELS`, the file is scanned for embedded JPEGs (a memory-mapped search for start-of-image
markers, each checked by walking its segments to a decodable frame header; its end is the first EOI after
its scan data), which finds those without knowing each maker's layout. RAF (Fujifilm) has a header pointing at its
JPEG; CR3 (Canon, an ISO base media file) keeps a `PRVW` box inside a `uuid` box (and a small `THMB`), and
its metadata as TIFF structures in `CMT1` (IFD0), `CMT2` (EXIF) and `CMT4` (GPS).

Only headers and IFDs are read (a few small reads), then the preview's bytes: no pixel is decoded here.
`find_preview(path)` never decodes; it raises `MediaError` with kind `raw_no_preview` when there is no
usable preview (a RAW that only a demosaicing decoder such as libraw could show), `corrupt` when the
container cannot be read at all.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

from PIL.TiffImagePlugin import IFDRational

from enrich.errors import MediaError
from enrich.schemas.vocab import ErrorKind

__all__ = ["RawPreview", "find_preview", "read_preview_bytes"]

SCAN_BELOW_PIXELS = 1_000_000  # the IFDs' best preview is smaller: look for a larger JPEG in the whole file
_MAX_SCAN_HITS = 10_000  # start-of-image markers examined at most (random sensor data holds a few)
_MAX_IFD_ENTRIES = 1000
_MAX_IFDS = 64  # every IFD visited, all chains and SubIFDs together
_MAX_VALUE_BYTES = 64 * 1024  # values we decode (strings, offset lists); the previews are read separately

# tags
_NEW_SUBFILE_TYPE = 0x00FE
_COMPRESSION = 0x0103
_STRIP_OFFSETS = 0x0111
_STRIP_BYTE_COUNTS = 0x0117
_ORIENTATION = 0x0112
_SUB_IFDS = 0x014A
_JPEG_IF = 0x0201
_JPEG_IF_LEN = 0x0202
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_RW2_JPG_FROM_RAW = 0x002E

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}
_TIFF_MAGICS = {42, 43, 0x4F52, 0x5352, 0x55}  # TIFF, BigTIFF (refused below), ORF "RO"/"RS", RW2 "U"

_CR3_META_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")
_CR3_PREVIEW_UUID = bytes.fromhex("eaf42b5e1c984b88b9fbb7dc406e4d16")

# SOF markers of JPEGs Pillow decodes: baseline, extended, progressive (not lossless SOF3, not arithmetic)
_DECODABLE_SOF = frozenset({0xC0, 0xC1, 0xC2})
_ALL_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True, slots=True)
class RawPreview:
    format: str  # DNG, CR2, CR3, NEF, RAF, ...
    offset: int  # where the preview JPEG starts in the file
    length: int
    width: int  # of the preview, as stored
    height: int
    orientation: int | None  # the RAW's own orientation tag (IFD0 0x0112); None: use the preview's EXIF
    ifd0: dict[int, Any] = field(default_factory=dict)  # decoded tags of the RAW's metadata
    exif: dict[int, Any] = field(default_factory=dict)
    gps: dict[int, Any] = field(default_factory=dict)
    candidates: int = 1  # previews found (the largest is this one)


def read_preview_bytes(path: str | os.PathLike[str], preview: RawPreview) -> bytes:
    with open(path, "rb") as f:
        f.seek(preview.offset)
        data = f.read(preview.length)
    if len(data) != preview.length:
        raise MediaError("truncated RAW file: its preview ends past the end of the file", kind=ErrorKind.TRUNCATED)
    return data


def find_preview(path: str | os.PathLike[str], fmt: str) -> RawPreview:
    """The largest decodable preview JPEG of a RAW file of format `fmt` (see tasks/sniff.RAW_FORMATS)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(16)
            if head.startswith(b"FUJIFILMCCD-RAW"):
                found = _raf(f, size)
            elif head[4:8] == b"ftyp":
                found = _cr3(f, size)
            else:
                found = _tiff_raw(f, size, fmt)
    except MediaError:
        raise
    except (OSError, struct.error, ValueError, IndexError, OverflowError) as exc:
        raise MediaError(f"corrupt {fmt} file: cannot read its structure ({exc})", kind=ErrorKind.CORRUPT) from None
    if found is None:
        raise MediaError(f"{fmt} file has no usable embedded preview (decoding the sensor data is not "
                         "supported)", kind=ErrorKind.RAW_NO_PREVIEW)
    return replace(found, format=fmt)


# -- JPEG candidates ------------------------------------------------------------------------------------------
def _jpeg_dims(f: BinaryIO, offset: int, length: int, size: int) -> tuple[int, int] | None:
    """(width, height) of a decodable JPEG at `offset`, from its frame header; None when it is not one."""
    if offset <= 0 or length < 128 or offset + length > size:
        return None
    end = offset + length
    f.seek(offset)
    if f.read(3) != b"\xff\xd8\xff":
        return None
    pos = offset + 2
    for _ in range(512):
        if pos + 9 > end:
            return None
        f.seek(pos)
        seg = f.read(9)
        if len(seg) < 4 or seg[0] != 0xFF:
            return None
        marker = seg[1]
        if marker == 0xFF:
            pos += 1
        elif marker in _ALL_SOF:
            if marker not in _DECODABLE_SOF or len(seg) < 9:
                return None  # lossless (the sensor data) or arithmetic-coded
            height, width = struct.unpack(">HH", seg[5:9])
            return (width, height) if width > 0 and height > 0 else None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
        elif marker in (0xD9, 0xDA):
            return None
        else:
            pos += 2 + int.from_bytes(seg[2:4], "big")
    return None


def _best(f: BinaryIO, size: int, spans: list[tuple[int, int]]) -> tuple[int, int, int, int, int] | None:
    """(offset, length, width, height, count) of the largest decodable JPEG among `spans`."""
    best = None
    count = 0
    for offset, length in dict.fromkeys(spans):
        dims = _jpeg_dims(f, offset, length, size)
        if dims is None:
            continue
        count += 1
        key = (dims[0] * dims[1], length)
        if best is None or key > best[0]:
            best = (key, offset, length, dims)
    if best is None:
        return None
    _, offset, length, (w, h) = best
    return offset, length, w, h, count


def _jpeg_end(mm: mmap.mmap, start: int) -> int | None:
    """Where the JPEG starting at `start` ends: past the first EOI after its first scan's data (0xFF in
    entropy-coded data is always stuffed, so the EOI cannot appear earlier), or None."""
    pos = start + 2
    size = len(mm)
    for _ in range(512):
        if pos + 4 > size or mm[pos] != 0xFF:
            return None
        marker = mm[pos + 1]
        if marker == 0xFF:
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
        elif marker == 0xDA:  # start of scan: the data runs to EOI (progressive files have more scans)
            end = mm.find(b"\xff\xd9", pos + 2)
            return None if end < 0 else end + 2
        elif marker == 0xD9:
            return None
        else:
            pos += 2 + int.from_bytes(mm[pos + 2 : pos + 4], "big")
    return None


def _gaps(size: int, known: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end) ranges of the file outside the `known` (offset, length) spans."""
    out, pos = [], 0
    for start, length in sorted(known):
        if start > pos:
            out.append((pos, start))
        pos = max(pos, start + length)
    if pos < size:
        out.append((pos, size))
    return out


def _scan(f: BinaryIO, size: int, skip: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans of the JPEGs found by their start-of-image marker anywhere in the file but the `skip` spans
    (the sensor data the IFDs declare: most of a RAW's bytes, and no preview)."""
    spans: list[tuple[int, int]] = []
    if size < 1024:
        return spans
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        hits = 0
        for start, end in _gaps(size, skip):
            pos = mm.find(b"\xff\xd8\xff", start, end)
            while pos >= 0 and hits < _MAX_SCAN_HITS:
                hits += 1
                if _jpeg_dims(f, pos, min(size - pos, 1 << 30), size) is not None:
                    stop = _jpeg_end(mm, pos)
                    if stop is not None:
                        spans.append((pos, stop - pos))
                        pos = mm.find(b"\xff\xd8\xff", stop, end) if stop < end else -1
                        continue
                pos = mm.find(b"\xff\xd8\xff", pos + 3, end)
    return spans


# -- TIFF structures ------------------------------------------------------------------------------------------
class _Tiff:
    """Reads IFDs of a TIFF structure that starts at `base` in `f` (offsets are relative to it)."""

    def __init__(self, f: BinaryIO, size: int, base: int = 0) -> None:
        self.f, self.size, self.base = f, size, base
        f.seek(base)
        head = f.read(8)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            raise ValueError("not a TIFF structure")
        self.e = "<" if head[:2] == b"II" else ">"
        magic = struct.unpack(self.e + "H", head[2:4])[0]
        if magic not in _TIFF_MAGICS or magic == 43:
            raise ValueError(f"unknown TIFF magic {magic:#x}")
        self.first = struct.unpack(self.e + "I", head[4:8])[0]

    def entries(self, offset: int) -> tuple[dict[int, tuple[int, int, bytes]], int]:
        """{tag: (type, count, 4 value bytes)} of the IFD at `offset`, and the next IFD's offset."""
        f, e = self.f, self.e
        f.seek(self.base + offset)
        raw = f.read(2)
        if len(raw) < 2:
            raise ValueError("IFD past the end of the file")
        n = struct.unpack(e + "H", raw)[0]
        if n == 0 or n > _MAX_IFD_ENTRIES:
            raise ValueError(f"implausible IFD with {n} entries")
        body = f.read(12 * n + 4)
        if len(body) < 12 * n:
            raise ValueError("IFD cut short")
        out = {}
        for i in range(n):
            tag, typ, count = struct.unpack(e + "HHI", body[12 * i : 12 * i + 8])
            out[tag] = (typ, count, body[12 * i + 8 : 12 * i + 12])
        nxt = struct.unpack(e + "I", body[12 * n : 12 * n + 4])[0] if len(body) >= 12 * n + 4 else 0
        return out, nxt

    def data_span(self, entry: tuple[int, int, bytes]) -> tuple[int, int]:
        """(absolute offset, length) of an entry's value bytes (inline values: -1)."""
        typ, count, value = entry
        length = _TYPE_SIZES.get(typ, 1) * count
        if length <= 4:
            return -1, length
        return self.base + struct.unpack(self.e + "I", value)[0], length

    def value(self, entry: tuple[int, int, bytes]) -> Any:
        """The decoded value: an int/str/IFDRational for one item, a tuple for several; None when odd."""
        typ, count, value = entry
        if typ not in _TYPE_SIZES or count == 0:
            return None
        length = _TYPE_SIZES[typ] * count
        if length <= 4:
            data = value[:length]
        else:
            if length > _MAX_VALUE_BYTES:
                return None
            offset = self.base + struct.unpack(self.e + "I", value)[0]
            if offset + length > self.size:
                return None
            self.f.seek(offset)
            data = self.f.read(length)
            if len(data) < length:
                return None
        e = self.e
        if typ == 2:
            return data.split(b"\x00", 1)[0].decode("utf-8", "replace")
        if typ in (1, 7):
            return data if typ == 7 or count > 1 else data[0]
        fmt = {3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 11: "f", 12: "d", 13: "I", 16: "Q"}.get(typ)
        if fmt is not None:
            items = struct.unpack(e + fmt * count, data)
        else:  # rationals
            pairs = struct.unpack(e + ("ii" if typ == 10 else "II") * count, data)
            items = tuple(IFDRational(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2))
        return items[0] if count == 1 else items

    def tags(self, offset: int) -> dict[int, Any]:
        entries, _ = self.entries(offset)
        out = {}
        for tag, entry in entries.items():
            value = self.value(entry)
            if value is not None:
                out[tag] = value
        return out


def _offsets(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, tuple):
        return [v for v in value if isinstance(v, int)]
    return []


def _tiff_raw(f: BinaryIO, size: int, fmt: str) -> RawPreview | None:
    tiff = _Tiff(f, size)
    spans: list[tuple[int, int]] = []
    sensor: list[tuple[int, int]] = []  # strips and tiles of image data that is not a JPEG preview
    ifd0: dict[int, Any] = {}
    exif_offset = gps_offset = None
    seen: set[int] = set()
    # (offset, depth): the IFD0 chain and every SubIFD, breadth first
    queue: list[tuple[int, int]] = [(tiff.first, 0)]
    first = True
    while queue and len(seen) < _MAX_IFDS:
        offset, depth = queue.pop(0)
        if offset in seen or offset < 8 or offset >= size:
            continue
        seen.add(offset)
        try:
            entries, nxt = tiff.entries(offset)
        except ValueError:
            if first:
                raise
            continue  # a broken secondary IFD: the others may still hold a preview
        if first:
            ifd0 = {tag: v for tag, e in entries.items() if (v := tiff.value(e)) is not None
                    and tag not in (_STRIP_OFFSETS, _STRIP_BYTE_COUNTS)}
            exif_offset = _offsets(ifd0.get(_EXIF_IFD))[:1]
            gps_offset = _offsets(ifd0.get(_GPS_IFD))[:1]
            first = False
        _collect(tiff, entries, spans, sensor)
        if nxt and depth == 0:
            queue.append((nxt, 0))
        if _SUB_IFDS in entries and depth < 3:
            queue.extend((o, depth + 1) for o in _offsets(tiff.value(entries[_SUB_IFDS]))[:16])
    exif: dict[int, Any] = {}
    gps: dict[int, Any] = {}
    if exif_offset:
        try:
            entries, _ = tiff.entries(exif_offset[0])
            _collect(tiff, entries, spans, sensor)
            exif = {tag: v for tag, e in entries.items() if tag != 0x927C and (v := tiff.value(e)) is not None}
        except ValueError:
            pass
    if gps_offset:
        try:
            gps = tiff.tags(gps_offset[0])
        except ValueError:
            pass
    best = _best(f, size, spans)
    if best is None or best[2] * best[3] < SCAN_BELOW_PIXELS:  # a maker-note preview may be larger
        best = _best(f, size, spans + _scan(f, size, sensor))
    if best is None:
        return None
    offset, length, w, h, count = best
    orientation = ifd0.get(_ORIENTATION)
    return RawPreview(fmt, offset, length, w, h, orientation if isinstance(orientation, int) else 1,
                      ifd0, exif, gps, count)


def _collect(tiff: _Tiff, entries: dict[int, tuple[int, int, bytes]], spans: list[tuple[int, int]],
             sensor: list[tuple[int, int]]) -> None:
    """Add the JPEG spans an IFD points at to `spans`, its other big strips and tiles to `sensor`."""
    for offsets_tag, counts_tag in ((_STRIP_OFFSETS, _STRIP_BYTE_COUNTS), (0x0144, 0x0145)):
        if offsets_tag in entries and counts_tag in entries:
            compression = tiff.value(entries[_COMPRESSION]) if _COMPRESSION in entries else 1
            if compression in (6, 99):
                continue  # (old-style) JPEG strips: previews
            offsets = _offsets(tiff.value(entries[offsets_tag]))
            counts = _offsets(tiff.value(entries[counts_tag]))
            sensor.extend((tiff.base + o, c) for o, c in zip(offsets, counts) if c >= 65536)
    if _JPEG_IF in entries and _JPEG_IF_LEN in entries:
        offset, length = tiff.value(entries[_JPEG_IF]), tiff.value(entries[_JPEG_IF_LEN])
        if isinstance(offset, int) and isinstance(length, int):
            spans.append((tiff.base + offset, length))
    if _COMPRESSION in entries and _STRIP_OFFSETS in entries and _STRIP_BYTE_COUNTS in entries:
        if tiff.value(entries[_COMPRESSION]) in (6, 7, 99):
            offsets = _offsets(tiff.value(entries[_STRIP_OFFSETS]))
            counts = _offsets(tiff.value(entries[_STRIP_BYTE_COUNTS]))
            if len(offsets) == 1 and len(counts) == 1:
                spans.append((tiff.base + offsets[0], counts[0]))
    if _RW2_JPG_FROM_RAW in entries:
        start, length = tiff.data_span(entries[_RW2_JPG_FROM_RAW])
        if start > 0:
            spans.append((start, length))


# -- RAF -------------------------------------------------------------------------------------------------------
def _raf(f: BinaryIO, size: int) -> RawPreview | None:
    """Fujifilm: a big-endian header; the JPEG's offset and length at 84 and 88. The metadata is the JPEG's
    own EXIF (orientation included), read when it is decoded."""
    f.seek(84)
    offset, length = struct.unpack(">II", f.read(8))
    best = _best(f, size, [(offset, length)])
    if best is None:
        return None
    offset, length, w, h, count = best
    return RawPreview("RAF", offset, length, w, h, None, candidates=count)


# -- CR3 -------------------------------------------------------------------------------------------------------
def _boxes(f: BinaryIO, start: int, end: int):
    """(type, payload start, box end) of the ISO BMFF boxes between `start` and `end`."""
    pos = start
    for _ in range(10_000):
        if pos + 8 > end:
            return
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if size == 1 and len(head) >= 16:
            size = struct.unpack(">Q", head[8:16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _cr3(f: BinaryIO, size: int) -> RawPreview | None:
    spans: list[tuple[int, int]] = []
    ifd0: dict[int, Any] = {}
    exif: dict[int, Any] = {}
    gps: dict[int, Any] = {}

    def jpeg_in(payload: int, end: int) -> None:
        f.seek(payload)
        head = f.read(min(64, end - payload))
        at = head.find(b"\xff\xd8\xff")
        if at < 0:
            return
        start = payload + at
        length = end - start
        if at >= 4:  # a declared JPEG size right before the data (PRVW, THMB)
            declared = struct.unpack(">I", head[at - 4 : at])[0]
            if 0 < declared <= length:
                length = declared
        spans.append((start, length))

    for kind, payload, end in _boxes(f, 0, size):
        if kind == b"moov":
            for sub, sub_payload, sub_end in _boxes(f, payload, end):
                if sub != b"uuid":
                    continue
                f.seek(sub_payload)
                if f.read(16) != _CR3_META_UUID:
                    continue
                for item, item_payload, item_end in _boxes(f, sub_payload + 16, sub_end):
                    try:
                        if item == b"CMT1":
                            t = _Tiff(f, size, item_payload)
                            ifd0 = t.tags(t.first)
                        elif item == b"CMT2":
                            t = _Tiff(f, size, item_payload)
                            exif = t.tags(t.first)
                        elif item == b"CMT4":
                            t = _Tiff(f, size, item_payload)
                            gps = t.tags(t.first)
                    except (ValueError, struct.error):
                        pass
                    if item == b"THMB":
                        jpeg_in(item_payload, item_end)
        elif kind == b"uuid":
            f.seek(payload)
            if f.read(16) != _CR3_PREVIEW_UUID:
                continue
            # 8 bytes, then the PRVW box
            for item, item_payload, item_end in _boxes(f, payload + 24, end):
                if item == b"PRVW":
                    jpeg_in(item_payload, item_end)
    best = _best(f, size, spans)
    if best is None:
        return None
    offset, length, w, h, count = best
    orientation = ifd0.get(_ORIENTATION)
    return RawPreview("CR3", offset, length, w, h, orientation if isinstance(orientation, int) else 1,
                      ifd0, exif, gps, count)
