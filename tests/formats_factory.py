"""Image formats beyond the web ones, and camera RAW files, built by the tests (nothing downloaded).

Pillow writes TIFF (multi-page, CMYK, LAB, 16-bit gray), BMP, TGA, JPEG 2000, ICO, ICNS, PPM, DDS and QOI.
What it cannot write is hand-built: a 16-bit RGB TIFF, a PSD (header, empty sections, a raw composite), a
CMYK ICC profile (a lut8 CMYK -> Lab table), and the RAW containers: TIFF structures with IFD chains,
SubIFDs, EXIF and GPS IFDs and embedded JPEG previews (DNG-like, CR2-like, NEF-like), a RAF-like header and a
CR3-like ISO BMFF file with a PRVW box. Previews show the same picture as tests/media_factory.py: upright,
a red square in the top-left corner (`MARKER_COLOR`), stored rotated as the RAW's orientation says.
"""
from __future__ import annotations

import io
import os
import struct
from pathlib import Path

from PIL import Image

from tests.media_factory import (
    BACKGROUND,
    CAMERA_MAKE,
    CAMERA_MODEL,
    DEFAULT_GPS,
    TAKEN_AT,
    _dms,
    _noise,
    _picture,
    build_exif,
)

CYAN_INK = (0, 160, 200)  # what pure cyan is in make_cmyk_icc()'s profile (Pillow's naive convert: 0,255,255)


# -- a tiny TIFF writer ------------------------------------------------------------------------------------
SHORT, LONG, RATIONAL, ASCII, UNDEFINED, BYTE = 3, 4, 5, 2, 7, 1


class TiffWriter:
    """Lays out a TIFF structure: header, then blobs and IFDs in the order added. IFDs are added leaves first
    (a SubIFD before the IFD that points at it; IFD1 before IFD0 so IFD0 can name it as next)."""

    def __init__(self, *, order: str = "<", magic: int = 42, extra_header: bytes = b"") -> None:
        self.e = order
        self.buf = bytearray((b"II" if order == "<" else b"MM") + struct.pack(order + "HI", magic, 0) + extra_header)

    def blob(self, data: bytes) -> int:
        if len(self.buf) % 2:
            self.buf += b"\x00"
        offset = len(self.buf)
        self.buf += data
        return offset

    def _pack(self, typ: int, values) -> tuple[int, bytes]:
        e = self.e
        if typ == ASCII:
            data = values.encode() + b"\x00"
            return len(data), data
        if typ in (UNDEFINED, BYTE) and isinstance(values, bytes):
            return len(values), values
        if not isinstance(values, (list, tuple)):
            values = [values]
        if typ == RATIONAL:
            data = b"".join(struct.pack(e + "II", n, d) for n, d in values)
            return len(values), data
        fmt = {SHORT: "H", LONG: "I", BYTE: "B"}[typ]
        return len(values), struct.pack(e + fmt * len(values), *values)

    def ifd(self, entries: list[tuple[int, int, object]], next_ifd: int = 0) -> int:
        """Write an IFD of (tag, type, value) entries; returns its offset."""
        packed = []
        for tag, typ, values in sorted(entries, key=lambda t: t[0]):
            count, data = self._pack(typ, values)
            if len(data) > 4:
                value = struct.pack(self.e + "I", self.blob(data))
            else:
                value = data + bytes(4 - len(data))
            packed.append(struct.pack(self.e + "HHI", tag, typ, count) + value)
        offset = self.blob(struct.pack(self.e + "H", len(packed)) + b"".join(packed)
                           + struct.pack(self.e + "I", next_ifd))
        return offset

    def finish(self, first_ifd: int) -> bytes:
        struct.pack_into(self.e + "I", self.buf, 4, first_ifd)
        return bytes(self.buf)


def exif_entries(w: TiffWriter, *, taken_at: str | None = TAKEN_AT, gps: tuple[float, float] | None = DEFAULT_GPS,
                 ) -> list[tuple[int, int, object]]:
    """IFD0 entries pointing at an EXIF IFD (DateTimeOriginal) and a GPS IFD, both written now."""
    out = []
    if taken_at:
        exif = w.ifd([(0x9003, ASCII, taken_at), (0xA431, ASCII, "SN-0042-1337")])
        out.append((0x8769, LONG, exif))
    if gps is not None:
        lat, lon = gps

        def rationals(v: float):
            return [(r.numerator, r.denominator) for r in _dms(v)]

        g = w.ifd([(1, ASCII, "N" if lat >= 0 else "S"), (2, RATIONAL, rationals(lat)),
                   (3, ASCII, "E" if lon >= 0 else "W"), (4, RATIONAL, rationals(lon))])
        out.append((0x8825, LONG, g))
    return out


def preview_jpeg(size: tuple[int, int], orientation: int | None = None, *, quality: int = 85,
                 exif: bytes | None = None, color=BACKGROUND, texture: bool = False) -> bytes:
    """A JPEG of the test picture, stored as a camera would for `orientation` (no EXIF unless given).
    `texture` adds fine noise, so the JPEG is as big as a camera's (a 24 MP preview: several MB)."""
    buf = io.BytesIO()
    params = {"quality": quality}
    if exif:
        params["exif"] = exif
    img = _picture(size, color, orientation)
    if texture:
        w, h = size
        noise = _noise((w // 2, h // 2), 7).resize(size, Image.Resampling.BILINEAR)
        img = Image.blend(img, Image.merge("RGB", (noise, noise, noise)), 0.2)
    img.save(buf, "JPEG", **params)
    return buf.getvalue()


def lossless_jpeg_stub(width: int = 3000, height: int = 2000, length: int = 4096) -> bytes:
    """What RAW sensor data compressed as lossless JPEG starts like (SOF3): not a preview."""
    sof3 = b"\xff\xc3" + struct.pack(">HBHHB", 11, 14, height // 2, width * 2 // 2, 1) + b"\x01\x11\x00"
    data = b"\xff\xd8" + sof3 + b"\xff\xda" + bytes(64)
    return data + bytes(max(0, length - len(data)))


def _camera_ifd0(w: TiffWriter, orientation: int, make: str, model: str, **exif) -> list:
    return [(0x010F, ASCII, make), (0x0110, ASCII, model), (0x0112, SHORT, orientation),
            (0x0132, ASCII, TAKEN_AT), *exif_entries(w, **exif)]


def make_dng(path, preview_size=(1024, 683), *, orientation: int = 1, filler: int = 0, make: str = CAMERA_MAKE,
             model: str = CAMERA_MODEL, previews: bool = True, preview_exif_orientation: int | None = None,
             texture: bool = False, **exif) -> Path:
    """DNG-like: IFD0 a small uncompressed RGB thumbnail with DNGVersion and the camera tags; SubIFDs: the
    sensor data (lossless JPEG, SOF3) and the large preview (JPEG); a mid-size JPEG via
    JPEGInterchangeFormat in IFD1. `filler` bytes of fake sensor data make the file big."""
    w = TiffWriter()
    raw = w.blob(lossless_jpeg_stub(length=max(4096, filler)))
    raw_len = max(4096, filler)
    raw_ifd = w.ifd([(0x00FE, LONG, 0), (0x0100, LONG, 6000), (0x0101, LONG, 4000), (0x0103, SHORT, 7),
                     (0x0106, SHORT, 32803), (0x0111, LONG, raw), (0x0117, LONG, raw_len)])
    subifds = [raw_ifd]
    next_ifd = 0
    if previews:
        own = build_exif(orientation=preview_exif_orientation).tobytes() if preview_exif_orientation else None
        big = preview_jpeg(preview_size, orientation, exif=own, texture=texture)
        big_at = w.blob(big)
        subifds.append(w.ifd([(0x00FE, LONG, 1), (0x0100, LONG, preview_size[0]), (0x0101, LONG, preview_size[1]),
                              (0x0103, SHORT, 7), (0x0106, SHORT, 6), (0x0111, LONG, big_at),
                              (0x0117, LONG, len(big))]))
        mid = preview_jpeg((preview_size[0] // 4, preview_size[1] // 4), orientation)
        mid_at = w.blob(mid)
        next_ifd = w.ifd([(0x0103, SHORT, 6), (0x0201, LONG, mid_at), (0x0202, LONG, len(mid))])
    thumb = _picture((64, 43), BACKGROUND, orientation).tobytes()
    thumb_at = w.blob(thumb)
    ifd0 = w.ifd([(0x00FE, LONG, 1), (0x0100, LONG, 64), (0x0101, LONG, 43), (0x0102, SHORT, [8, 8, 8]),
                  (0x0103, SHORT, 1), (0x0106, SHORT, 2), (0x0111, LONG, thumb_at), (0x0115, SHORT, 3),
                  (0x0117, LONG, len(thumb)), (0x014A, LONG, subifds), (0xC612, BYTE, bytes([1, 4, 0, 0])),
                  *_camera_ifd0(w, orientation, make, model, **exif)], next_ifd)
    path = Path(path)
    path.write_bytes(w.finish(ifd0))
    return path


def make_cr2(path, preview_size=(1200, 800), *, orientation: int = 1, make: str = "Canon",
             model: str = "Canon EOS 5D Mark IV", **exif) -> Path:
    """CR2-like: `CR` after the TIFF header; IFD0 a full-size JPEG as one strip (Compression 6) with the
    camera tags; IFD1 a small JPEG via JPEGInterchangeFormat; IFD2 uncompressed RGB; IFD3 the sensor data
    (lossless JPEG)."""
    w = TiffWriter(extra_header=b"CR\x02\x00" + struct.pack("<I", 0))
    raw = lossless_jpeg_stub()
    raw_at = w.blob(raw)
    ifd3 = w.ifd([(0x0103, SHORT, 6), (0x0111, LONG, raw_at), (0x0117, LONG, len(raw))])
    small_rgb = bytes(3 * 32 * 21)
    rgb_at = w.blob(small_rgb)
    ifd2 = w.ifd([(0x0100, LONG, 32), (0x0101, LONG, 21), (0x0103, SHORT, 1), (0x0111, LONG, rgb_at),
                  (0x0117, LONG, len(small_rgb))], ifd3)
    thumb = preview_jpeg((160, 120) if orientation < 5 else (160, 120), orientation)
    thumb_at = w.blob(thumb)
    ifd1 = w.ifd([(0x0103, SHORT, 6), (0x0201, LONG, thumb_at), (0x0202, LONG, len(thumb))], ifd2)
    big = preview_jpeg(preview_size, orientation)
    big_at = w.blob(big)
    ifd0 = w.ifd([(0x0100, LONG, preview_size[0]), (0x0101, LONG, preview_size[1]), (0x0103, SHORT, 6),
                  (0x0111, LONG, big_at), (0x0117, LONG, len(big)),
                  *_camera_ifd0(w, orientation, make, model, **exif)], ifd1)
    data = bytearray(w.finish(ifd0))
    struct.pack_into("<I", data, 12, ifd3)  # CR2 header: the raw IFD's offset
    path = Path(path)
    path.write_bytes(bytes(data))
    return path


def make_nef(path, preview_size=(960, 640), *, orientation: int = 1, **exif) -> Path:
    """NEF-like (big-endian, as Nikon writes): IFD0 a tiny thumbnail; SubIFDs: the preview via
    JPEGInterchangeFormat and the sensor data."""
    w = TiffWriter(order=">")
    big = preview_jpeg(preview_size, orientation)
    big_at = w.blob(big)
    preview_ifd = w.ifd([(0x00FE, LONG, 1), (0x0103, SHORT, 6), (0x0201, LONG, big_at), (0x0202, LONG, len(big))])
    raw = bytes(8192)
    raw_at = w.blob(raw)
    raw_ifd = w.ifd([(0x00FE, LONG, 0), (0x0103, SHORT, 34713), (0x0111, LONG, raw_at), (0x0117, LONG, len(raw))])
    ifd0 = w.ifd([(0x00FE, LONG, 1), (0x014A, LONG, [preview_ifd, raw_ifd]),
                  *_camera_ifd0(w, orientation, "NIKON CORPORATION", "NIKON D850", **exif)])
    path = Path(path)
    path.write_bytes(w.finish(ifd0))
    return path


def make_orf(path, preview_size=(1600, 1200), *, orientation: int = 1, filler: int = 8192, random_filler: bool = False,
             texture: bool = False, **exif) -> Path:
    """ORF-like (`IIRO` magic): IFD0 the sensor data and the camera tags, IFD1 a 160x120 thumbnail via
    JPEGInterchangeFormat; the large preview sits inside the maker note (as Olympus does), which no IFD
    entry of ours points into: only the file scan finds it. `random_filler`: sensor data of random bytes
    (what the scan must wade through), else zeros."""
    w = TiffWriter(magic=0x4F52)
    raw = os.urandom(filler) if random_filler else bytes(filler)
    raw_at = w.blob(raw)
    big = preview_jpeg(preview_size, orientation, texture=texture)
    maker_note = b"OLYMPUS\x00II\x03\x00" + bytes(64) + big + bytes(32)
    thumb = preview_jpeg((160, 120), orientation)
    thumb_at = w.blob(thumb)
    ifd1 = w.ifd([(0x0103, SHORT, 6), (0x0201, LONG, thumb_at), (0x0202, LONG, len(thumb))])
    exif_ifd = w.ifd([(0x9003, ASCII, TAKEN_AT), (0x927C, UNDEFINED, maker_note)])
    ifd0 = w.ifd([(0x0103, SHORT, 1), (0x0111, LONG, raw_at), (0x0117, LONG, len(raw)),
                  (0x010F, ASCII, "OLYMPUS CORPORATION"), (0x0110, ASCII, "E-M1MarkII"),
                  (0x0112, SHORT, orientation), (0x8769, LONG, exif_ifd)], ifd1)
    path = Path(path)
    path.write_bytes(w.finish(ifd0))
    return path


def make_raw_without_preview(path) -> Path:
    """An ARW-like TIFF holding only sensor data: nothing to describe without demosaicing."""
    w = TiffWriter()
    raw = lossless_jpeg_stub()
    raw_at = w.blob(raw)
    ifd0 = w.ifd([(0x0103, SHORT, 7), (0x0111, LONG, raw_at), (0x0117, LONG, len(raw)),
                  (0x010F, ASCII, "SONY"), (0x0110, ASCII, "ILCE-7M3")])
    path = Path(path)
    path.write_bytes(w.finish(ifd0))
    return path


def make_raf(path, preview_size=(1280, 853), *, orientation: int = 1) -> Path:
    """RAF-like: the Fujifilm header (magic, model, the JPEG's offset and length at 84/88), the preview JPEG
    (carrying the camera's EXIF, orientation included), then fake CFA data."""
    exif = build_exif(orientation=orientation, make="FUJIFILM", model="X-T4").tobytes()
    jpeg = preview_jpeg(preview_size, orientation, exif=exif)
    header = bytearray(160)
    header[0:16] = b"FUJIFILMCCD-RAW "
    header[16:20] = b"0201"
    header[20:28] = b"FF129502"
    header[28:34] = b"X-T4\x00\x00"
    header[60:64] = b"0100"
    cfa = bytes(16384)
    struct.pack_into(">IIIIII", header, 84, 160, len(jpeg), 0, 0, 160 + len(jpeg), len(cfa))
    path = Path(path)
    path.write_bytes(bytes(header) + jpeg + cfa)
    return path


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def make_cr3(path, preview_size=(1620, 1080), *, orientation: int = 1, **exif) -> Path:
    """CR3-like ISO BMFF: ftyp `crx `; moov holding Canon's uuid box with CMT1 (IFD0: make, model,
    orientation), CMT2 (EXIF), CMT4 (GPS) as TIFF structures and a THMB thumbnail; a uuid box with the
    PRVW preview; an mdat of fake sensor data."""
    def tiff_of(entries) -> bytes:
        w = TiffWriter()
        return w.finish(w.ifd(entries))

    cmt1 = tiff_of([(0x010F, ASCII, "Canon"), (0x0110, ASCII, "Canon EOS R5"), (0x0112, SHORT, orientation),
                    (0x0132, ASCII, TAKEN_AT)])
    taken = exif.get("taken_at", TAKEN_AT)
    cmt2 = tiff_of([(0x9003, ASCII, taken)] if taken else [(0xA431, ASCII, "1")])
    lat, lon = exif.get("gps", DEFAULT_GPS)
    cmt4 = tiff_of([(1, ASCII, "N"), (2, RATIONAL, [(r.numerator, r.denominator) for r in _dms(lat)]),
                    (3, ASCII, "E"), (4, RATIONAL, [(r.numerator, r.denominator) for r in _dms(lon)])])
    thumb = preview_jpeg((160, 120), orientation)
    thmb = _box(b"THMB", struct.pack(">IHHI", 0, 160, 120, len(thumb)) + b"\x00\x01\x00\x00" + thumb)
    meta_uuid = _box(b"uuid", bytes.fromhex("85c0b687820f11e08111f4ce462b6a48") + _box(b"CNCV", b"CanonCR3_001/00.09.00/00.00.00")
                     + _box(b"CMT1", cmt1) + _box(b"CMT2", cmt2) + _box(b"CMT4", cmt4) + thmb)
    moov = _box(b"moov", meta_uuid + _box(b"mvhd", bytes(100)))
    big = preview_jpeg(preview_size, orientation)
    prvw = _box(b"PRVW", struct.pack(">IHHHHI", 0, 1, preview_size[0], preview_size[1], 1, len(big)) + big)
    preview_uuid = _box(b"uuid", bytes.fromhex("eaf42b5e1c984b88b9fbb7dc406e4d16") + struct.pack(">Q", 1) + prvw)
    ftyp = _box(b"ftyp", b"crx " + struct.pack(">I", 1) + b"crx isom")
    path = Path(path)
    path.write_bytes(ftyp + moov + preview_uuid + _box(b"mdat", bytes(8192)))
    return path


# -- other image formats -----------------------------------------------------------------------------------
def write_tiff_rgb16(path, size: tuple[int, int], *, seed_color=(0x4000, 0x8000, 0xC000)) -> Path:
    """An uncompressed 16-bit RGB TIFF (Pillow cannot write one): a horizontal gradient in red over a fixed
    green and blue, so 8-bit conversion can be checked (values / 257)."""
    width, height = size
    row = bytearray()
    for x in range(width):
        r = (x * 65535) // max(1, width - 1)
        row += struct.pack("<HHH", r, seed_color[1], seed_color[2])
    data_len = len(row) * height
    w = TiffWriter()
    # The pixel data goes last, written straight to the file (a 48 MP image is 288 MB)
    ifd_entries = [(0x0100, LONG, width), (0x0101, LONG, height), (0x0102, SHORT, [16, 16, 16]),
                   (0x0103, SHORT, 1), (0x0106, SHORT, 2), (0x0115, SHORT, 3), (0x0116, LONG, height),
                   (0x011C, SHORT, 1)]
    # offsets are fixed once the IFD is written: reserve the strip entries with a placeholder then patch
    ifd = w.ifd([*ifd_entries, (0x0111, LONG, 0), (0x0117, LONG, data_len)])
    data_at = len(w.buf) + (len(w.buf) % 2)
    header = bytearray(w.finish(ifd))
    header += bytes(data_at - len(header))
    # patch StripOffsets (tag 0x0111) inside the IFD
    n = struct.unpack_from("<H", header, ifd)[0]
    for i in range(n):
        at = ifd + 2 + 12 * i
        if struct.unpack_from("<H", header, at)[0] == 0x0111:
            struct.pack_into("<I", header, at + 8, data_at)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(header)
        block = bytes(row) * max(1, min(height, (8 << 20) // max(1, len(row))))
        rows_per_block = len(block) // len(row)
        left = height
        while left > 0:
            n = min(left, rows_per_block)
            f.write(block[: n * len(row)])
            left -= n
    return path


def make_tiff_pages(path, sizes_colors: list[tuple[tuple[int, int], tuple[int, int, int]]]) -> Path:
    """A multi-page TIFF: one page per (size, colour), the first with the test picture and EXIF."""
    (size0, color0), *rest = sizes_colors
    first = _picture(size0, color0)
    others = [Image.new("RGB", s, c) for s, c in rest]
    first.save(path, "TIFF", save_all=True, append_images=others, exif=build_exif().tobytes())
    return Path(path)


def make_cmyk_icc() -> bytes:
    """An ICC v2 CMYK output profile with an A2B0 lut8 (CMYK -> Lab) built from ink colours: cyan prints as
    CYAN_INK, not Pillow's naive (0, 255, 255). LittleCMS creates no CMYK profile itself."""
    inks = {"c": CYAN_INK, "m": (230, 0, 126), "y": (255, 236, 0), "k": (30, 30, 30)}

    def rgb_of(c, m, y, k):
        out = [255.0, 255.0, 255.0]
        for on, ink in ((c, "c"), (m, "m"), (y, "y"), (k, "k")):
            if on:
                out = [o * i / 255.0 for o, i in zip(out, inks[ink])]
        return out

    def lab_of(rgb):
        def lin(v):
            v /= 255.0
            return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

        r, g, b = (lin(v) for v in rgb)
        x = 0.4360747 * r + 0.3850649 * g + 0.1430804 * b
        y = 0.2225045 * r + 0.7168786 * g + 0.0606169 * b
        z = 0.0139322 * r + 0.0971045 * g + 0.7141733 * b
        wx, wy, wz = 0.9642, 1.0, 0.8249

        def f(t):
            return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

        fx, fy, fz = f(x / wx), f(y / wy), f(z / wz)
        L, a, bb = 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)
        return (max(0, min(255, round(L * 255 / 100))), max(0, min(255, round(a + 128))),
                max(0, min(255, round(bb + 128))))

    clut = b""
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    clut += bytes(lab_of(rgb_of(c, m, y, k)))
    ramp = bytes(range(256))
    identity = b"".join(struct.pack(">i", 65536 if i in (0, 4, 8) else 0) for i in range(9))
    mft1 = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity + ramp * 4 + clut + ramp * 3

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    text = b"Test CMYK inks"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text) + 1) + text + b"\x00" + bytes(8) + bytes(3) + bytes(67)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + bytes(4) + s15(0.9642) + s15(1.0) + s15(0.8249)),
            (b"A2B0", mft1)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"prtrCMYKLab "
    header += bytes(12) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8) + struct.pack(">I", 0)
    header += s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(4) + bytes(16) + bytes(28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def make_psd(path, size=(64, 48), *, orientation_marker: bool = True) -> Path:
    """A minimal valid PSD (Pillow cannot write one): RGB, 8 bits, no colour mode data, no resources, no
    layers, the composite as raw planar channels. Its picture is the test picture."""
    w, h = size
    img = _picture(size, BACKGROUND) if orientation_marker else Image.new("RGB", size, BACKGROUND)
    planes = b"".join(band.tobytes() for band in img.split())
    data = (b"8BPS" + struct.pack(">H", 1) + bytes(6) + struct.pack(">HIIHH", 3, h, w, 8, 3)
            + struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", 0)
            + struct.pack(">H", 0) + planes)
    path = Path(path)
    path.write_bytes(data)
    return path


def make_ico(path, sizes=((16, 16), (32, 32), (64, 64))) -> Path:
    """An ICO holding several sizes; the largest shows the test picture (the smaller ones are resized)."""
    big = max(sizes)
    _picture(big, BACKGROUND).save(path, "ICO", sizes=list(sizes))
    return Path(path)


def save_picture(path, fmt: str, size=(64, 48), mode: str = "RGB", **params) -> Path:
    """The test picture saved by Pillow as `fmt` in `mode`."""
    img = _picture(size, BACKGROUND)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, fmt, **params)
    return Path(path)


def make_raw_library(directory) -> dict[str, str]:
    """A folder as a photographer keeps it: RAW+JPEG pairs, RAWs alone, companions. {relative path: expected
    outcome}: "ok" (described), "pair" (the RAW of a RAW+JPEG pair: copied from the JPEG), "companion"."""
    from tests.media_factory import make_jpeg

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    expected = {}
    make_cr2(root / "IMG_0001.CR2")
    make_jpeg(root / "IMG_0001.JPG", size=(600, 400))
    expected.update({"IMG_0001.CR2": "pair", "IMG_0001.JPG": "ok"})
    make_dng(root / "DSC_0002.dng", orientation=6)
    make_jpeg(root / "DSC_0002.jpeg", size=(400, 600), color=(10, 200, 10))
    expected.update({"DSC_0002.dng": "pair", "DSC_0002.jpeg": "ok"})
    make_nef(root / "solo.nef")
    expected["solo.nef"] = "ok"
    make_cr3(root / "IMG_0003.CR3")
    expected["IMG_0003.CR3"] = "ok"
    (root / "IMG_0001.CR2.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
    (root / "IMG_0001.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
    (root / "IMG_0004.AAE").write_text("<?xml version='1.0'?><plist/>")
    (root / "GOPR0005.THM").write_bytes(preview_jpeg((160, 120)))
    (root / "DSC_0002.dng.pp3").write_text("[Version]\nAppVersion=5.9\n")
    expected.update({"IMG_0001.CR2.xmp": "companion", "IMG_0001.xmp": "companion", "IMG_0004.AAE": "companion",
                     "GOPR0005.THM": "companion", "DSC_0002.dng.pp3": "companion"})
    return expected


def jpeg_size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def file_size(path) -> int:
    return os.path.getsize(path)
