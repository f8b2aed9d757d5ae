"""Camera RAW previews and big TIFF scans: what preparing them costs.

  preview extraction   a 25 MB DNG-structured RAW the script builds (IFD0 thumbnail, SubIFDs with the sensor
                       data as lossless JPEG filler and a full-size 24 MP preview JPEG, a mid-size JPEG in
                       IFD1, EXIF and GPS IFDs): `find_preview` (walk the IFDs, read each JPEG's frame header)
                       plus reading the preview's bytes. No pixel is decoded. Target: <= 20 ms (median).
  maker-note scan      a 25 MB ORF-like RAW whose 24 MP preview only the maker note points at, behind 20 MB
                       of random sensor data: the IFDs give a thumbnail, so the whole file is scanned for
                       embedded JPEGs (mmap + start-of-image search). Same target.
  RAW prepared         the whole `prepare_image` on that RAW (draft-mode decode of the preview at 1/8 scale,
                       orientation, resize, JPEG encode), for comparison.
  48 MP 16-bit TIFF    `prepare_image` on an uncompressed 8000 x 6000 16-bit RGB TIFF (288 MB): a scanner's
                       output. Pillow decodes 16-bit RGB straight to 8-bit; the rest is the resize.

    python benchmarks/bench_raw.py [--runs 30] [--tiff-runs 2] [--no-tiff]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enrich.tasks.prepare_image import prepare_image  # noqa: E402
from enrich.tasks.raw_preview import find_preview, read_preview_bytes  # noqa: E402
from tests.formats_factory import make_dng, make_orf, write_tiff_rgb16  # noqa: E402

RAW_BYTES = 25_000_000
TARGET_MS = 20.0


def median_ms(fn, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--tiff-runs", type=int, default=2)
    ap.add_argument("--no-tiff", action="store_true", help="skip the 48 MP TIFF (it writes 288 MB)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="enrich-bench-raw-") as tmp:
        raw = Path(tmp) / "big.dng"
        t0 = time.perf_counter()
        make_dng(raw, preview_size=(6000, 4000), orientation=6, texture=True)
        # the sensor data (lossless-JPEG filler) takes the rest of the 25 MB
        make_dng(raw, preview_size=(6000, 4000), orientation=6, texture=True,
                 filler=RAW_BYTES - raw.stat().st_size)
        size_mb = raw.stat().st_size / 1e6
        preview = find_preview(raw, "DNG")
        print(f"RAW: {raw.stat().st_size:,} bytes ({size_mb:.1f} MB), built in {time.perf_counter() - t0:.1f} s; "
              f"{preview.candidates} preview JPEG(s), largest {preview.width}x{preview.height}, "
              f"{preview.length / 1e6:.2f} MB at offset {preview.offset:,}")

        def extract():
            p = find_preview(raw, "DNG")
            read_preview_bytes(raw, p)

        extract()  # page cache warm, imports done
        med, worst = median_ms(extract, args.runs)
        verdict = "OK" if med <= TARGET_MS else "OVER"
        print(f"preview extraction (find + read bytes): median {med:.2f} ms, worst {worst:.2f} ms over "
              f"{args.runs} runs; target <= {TARGET_MS:.0f} ms: {verdict}")
        med_find, _ = median_ms(lambda: find_preview(raw, "DNG"), args.runs)
        print(f"  of which finding it (IFDs + frame headers): median {med_find:.3f} ms")
        orf = Path(tmp) / "big.orf"
        make_orf(orf, preview_size=(6000, 4000), texture=True, filler=1024)
        make_orf(orf, preview_size=(6000, 4000), texture=True, random_filler=True,
                 filler=RAW_BYTES - orf.stat().st_size + 1024)
        found = find_preview(orf, "ORF")
        med_scan, worst_scan = median_ms(lambda: read_preview_bytes(orf, find_preview(orf, "ORF")), args.runs)
        print(f"maker-note scan ({orf.stat().st_size / 1e6:.1f} MB ORF-like, random sensor data): found "
              f"{found.width}x{found.height}; median {med_scan:.2f} ms, worst {worst_scan:.2f} ms; target <= "
              f"{TARGET_MS:.0f} ms: {'OK' if med_scan <= TARGET_MS else 'OVER'}")
        med_prep, _ = median_ms(lambda: prepare_image(raw, max_side=500), max(3, args.runs // 5))
        med_prep_hi, _ = median_ms(lambda: prepare_image(raw, max_side=1536), 3)
        print(f"RAW prepared (whole prepare_image, 24 MP preview): {med_prep:.1f} ms at 500 px, "
              f"{med_prep_hi:.1f} ms at 1536 px (median)")

        if not args.no_tiff:
            tiff = Path(tmp) / "scan48.tif"
            t0 = time.perf_counter()
            write_tiff_rgb16(tiff, (8000, 6000))
            print(f"TIFF: 8000x6000 16-bit RGB, {tiff.stat().st_size / 1e6:.0f} MB, written in "
                  f"{time.perf_counter() - t0:.1f} s")
            prepare_image(tiff, max_side=500)  # page cache warm
            for side in (500, 1536):
                med, worst = median_ms(lambda: prepare_image(tiff, max_side=side), args.tiff_runs)
                print(f"48 MP 16-bit TIFF prepared at {side} px: median {med / 1000:.2f} s, worst "
                      f"{worst / 1000:.2f} s over {args.tiff_runs} runs (one thread)")
            os.unlink(tiff)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
