"""What stripping personal metadata costs per file (tasks/strip_metadata.py): the copy of a tagged file and,
for a file without tags, the check that decides no copy is needed.

Builds one tagged file per case in a temp folder (sizes below; the files were just written, so they are in
the page cache: a cold read from disk adds the disk's read time), strips it --repeat times and prints the
median time, the throughput and the copy's size. The copies go where the pipeline puts them
(`media_temp_dir()`, under $TMPDIR).

    python benchmarks/bench_strip_metadata.py [--repeat 3] [--big] [--python-copy]
    --big adds a 500 MB MP4; --python-copy copies ranges through Python (as where os.copy_file_range is
    missing, e.g. macOS) instead of in the kernel.
"""
from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enrich.tasks.strip_metadata import media_temp_dir, strip_metadata  # noqa: E402
from tests.media_factory import (  # noqa: E402
    make_flac, make_mp3, make_mp4, make_pdf, make_wav, make_webm,
)

MB = 1_000_000


def grow_mp4(path: Path, size: int) -> Path:
    """Make the (last) mdat box of a factory MP4 `size` bytes long in all: stand-in for the frames."""
    data = path.read_bytes()
    mdat = data.rindex(b"mdat") - 4
    extra = size - len(data)
    with open(path, "r+b") as fh:
        fh.seek(mdat)
        fh.write(struct.pack(">I", len(data) - mdat + extra))
        fh.seek(0, os.SEEK_END)
        _write_filler(fh, extra)
    return path


def grow_flac(path: Path, size: int) -> Path:
    with open(path, "ab") as fh:
        _write_filler(fh, size - path.stat().st_size)
    return path


def _write_filler(fh, count: int) -> None:
    block = os.urandom(1 << 20)
    while count > 0:
        n = min(count, len(block))
        fh.write(block[:n])
        count -= n


def big_pdf(path: Path, size: int) -> Path:
    """A tagged PDF whose pages each carry a 1 MB image stream (random bytes: never decoded, only copied)."""
    from pypdf import PdfWriter
    from pypdf.generic import DictionaryObject, NameObject, NumberObject, StreamObject

    make_pdf(path, 1, personal=True)
    writer = PdfWriter(clone_from=str(path), incremental=False)
    pages = max(1, size // MB)
    for i in range(pages):
        page = writer.pages[0] if i == 0 else writer.add_blank_page(612, 792)
        image = StreamObject()
        image.set_data(os.urandom(MB))
        image.update({NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Image"),
                      NameObject("/Width"): NumberObject(1000), NameObject("/Height"): NumberObject(1000),
                      NameObject("/ColorSpace"): NameObject("/DeviceGray"),
                      NameObject("/BitsPerComponent"): NumberObject(8)})
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/XObject"): DictionaryObject({NameObject("/Im0"): writer._add_object(image)})})
    writer.add_metadata({"/Author": "Alice Example"})
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


CASES = {
    # name: (mime, builder(path))
    "mp3 10 MB, ID3v2+APE+ID3v1": ("audio/mp3", lambda p: make_mp3(p, 10 * MB / 16_000, personal=True)),
    "wav 50 MB, LIST/INFO": ("audio/wav", lambda p: make_wav(p, 50 * MB / 8_000, tone_hz=None, personal=True)),
    "flac 50 MB, comments+picture": ("audio/flac", lambda p: grow_flac(make_flac(p, 300, personal=True), 50 * MB)),
    "mp4 50 MB, phone udta/meta": ("video/mp4", lambda p: grow_mp4(make_mp4(p, 60, personal=True), 50 * MB)),
    "mp4 50 MB, no tags (check)": ("video/mp4", lambda p: grow_mp4(make_mp4(p, 60), 50 * MB)),
    "webm, Tags+Title": ("video/webm", lambda p: make_webm(p, 60, personal=True)),
    "pdf 20 MB, Info+XMP": ("application/pdf", lambda p: big_pdf(p, 20 * MB)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="also a 500 MB MP4 (needs 1 GB of free temp space)")
    ap.add_argument("--python-copy", action="store_true", help="no os.copy_file_range (as on macOS)")
    args = ap.parse_args()
    if args.python_copy and hasattr(os, "copy_file_range"):
        del os.copy_file_range
    cases = dict(CASES)
    if args.big:
        cases["mp4 500 MB, phone udta/meta"] = ("video/mp4",
                                                 lambda p: grow_mp4(make_mp4(p, 600, personal=True), 500 * MB))
    print(f"copies in {media_temp_dir()}")
    print(f"{'case':<30} {'MB':>7} {'ms median':>10} {'MB/s':>8} {'copy MB':>8}")
    with tempfile.TemporaryDirectory(prefix="enrich-bench-strip-") as tmp:
        for i, (name, (mime, build)) in enumerate(cases.items()):
            path = build(Path(tmp) / f"case{i}{'.pdf' if 'pdf' in mime else ''}")
            size = path.stat().st_size / MB
            times, copy_size = [], 0.0
            for _ in range(args.repeat):
                t = time.perf_counter()
                copy = strip_metadata(path, mime, timeout_s=120)
                times.append(time.perf_counter() - t)
                if copy is not None:
                    copy_size = copy.stat().st_size / MB
                    copy.unlink()
            median = statistics.median(times)
            copied = f"{copy_size:8.1f}" if copy_size else f"{'none':>8}"
            print(f"{name:<30} {size:>7.1f} {median * 1000:>10.1f} {size / median:>8.0f} {copied}")
            path.unlink()


if __name__ == "__main__":
    main()
