"""How fast `enrich estimate` scans a photo library, as a user runs it (a new process each time).

Target (issue 3): 20,000 image files of about 100 KB each at 2,000 files/s or more on this machine.
The library is generated once (a few distinct camera-like JPEGs with EXIF and a maker note, copied with
a few changed bytes each) into a temp folder that later runs reuse; generation time is never counted.
Prints files/s for the scan (the `files_per_s` figure of `enrich estimate --json`) and end to end (the
whole process: start-up, imports, scan, output), warm and with the files dropped from the page cache
(posix_fadvise DONTNEED on every file: no root needed), then in-process figures per thread count.

    python benchmarks/bench_estimate_speed.py [--files 20000] [--repeat 3] [--clean]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_FILES_PER_S = 2000
FILE_BYTES = 100_000
# (stored size, EXIF orientation): landscape and portrait shapes of ~100 KB photos (web-sized, exported)
SHAPES = [((1600, 1200), 1), ((1200, 1600), 1), ((2048, 1536), 6), ((1920, 1080), 1),
          ((1280, 960), 1), ((1600, 1200), 8), ((1024, 768), 1), ((1080, 1350), 1)]


def _base_jpeg(size: tuple[int, int], orientation: int, seed: int) -> bytes:
    """A JPEG of about FILE_BYTES with camera-like EXIF (make, model, date, a 12 KB maker note)."""
    from PIL import Image

    rng = random.Random(seed)
    small = Image.merge("RGB", [Image.effect_noise((max(8, size[0] // 128), max(8, size[1] // 128)), 60 + seed + c)
                                for c in range(3)])
    img = small.resize(size, Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"
    exif[0x0110] = f"Model {seed}"
    exif[0x0112] = orientation
    exif[0x0132] = "2025:07:14 18:03:11"
    exif.get_ifd(0x8769)[0x927C] = bytes(rng.getrandbits(8) for _ in range(12_000))  # maker note
    best = b""
    for quality in (90, 80, 70, 60, 50, 40, 30, 20, 10, 5):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
        best = buf.getvalue()
        if len(best) <= FILE_BYTES:
            break
    # pad to about FILE_BYTES after the end-of-image marker (decoders ignore it)
    return best + bytes(max(0, FILE_BYTES - len(best)))


def make_library(root: Path, n: int) -> Path:
    """n files in folders of 500, generated once: a marker says the folder is complete."""
    marker = root.with_name(root.name + ".complete")  # outside the library: not a file to scan
    if marker.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    marker.unlink(missing_ok=True)
    print(f"generating {n:,} files of about {FILE_BYTES // 1000} KB in {root} (once; not timed) ...", flush=True)
    bases = [_base_jpeg(size, orientation, i) for i, (size, orientation) in enumerate(SHAPES)]
    for i in range(n):
        folder = root / f"{i // 500:03d}"
        if i % 500 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        data = bytearray(bases[i % len(bases)])
        data[-4:] = i.to_bytes(4, "big")  # a small byte change: every file is distinct
        (folder / f"IMG_{i:05d}.jpg").write_bytes(data)
    marker.write_text(str(n))
    return root


def drop_from_page_cache(root: Path) -> None:
    for dirpath, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_cli(root: Path, home: str) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "enrich", "estimate", str(root), "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True,
                         env={**os.environ, "ENRICH_HOME": home})
    return json.loads(out.stdout), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="where to generate the library (default: a temp folder, reused)")
    ap.add_argument("--clean", action="store_true", help="delete the generated library afterwards")
    args = ap.parse_args()
    root = args.dir or Path(tempfile.gettempdir()) / f"enrich-bench-estimate-{args.files}"
    make_library(root, args.files)
    home = tempfile.mkdtemp(prefix="enrich-bench-home-")  # an empty warehouse: no history to read
    try:
        run_cli(root, home)  # warm bytecode caches and the page cache
        results: dict[str, list[tuple[float, float]]] = {"warm": [], "cold": []}
        for _ in range(args.repeat):
            for cache in ("warm", "cold"):
                if cache == "cold":
                    drop_from_page_cache(root)
                est, wall = run_cli(root, home)
                assert est["files"] == args.files and est["items"] == args.files, est
                results[cache].append((est["files_per_s"], args.files / wall))

        print(f"enrich estimate over {args.files:,} JPEGs of ~{FILE_BYTES // 1000} KB, {args.repeat} runs each "
              f"(new process each; {os.cpu_count()} CPUs):")
        for cache, runs in results.items():
            scan = statistics.median(r[0] for r in runs)
            whole = statistics.median(r[1] for r in runs)
            verdict = "ok" if scan >= TARGET_FILES_PER_S else "BELOW TARGET"
            print(f"  {cache:<4} page cache: scan {scan:,.0f} files/s, end to end {whole:,.0f} files/s "
                  f"(target: scan >= {TARGET_FILES_PER_S:,} files/s: {verdict})")
        print(f"  estimate: {est['input_tokens']:,} input tokens, ${est['cost_usd']} ({est['model']})")
        print(f"  prefect imported: {prefect_imported(root, home)}")

        from enrich.flows.estimate import estimate
        from enrich.settings import load_settings

        settings = load_settings({**os.environ, "ENRICH_HOME": home})
        print("  in process, warm, by header-probe threads:")
        for workers in (1, 2, 4, 8, 16):
            est_obj = estimate([root], settings, workers=workers, history=False)
            print(f"    {workers:>2} threads: {est_obj.files_per_s:,.0f} files/s")
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if args.clean:
            shutil.rmtree(root, ignore_errors=True)
            root.with_name(root.name + ".complete").unlink(missing_ok=True)


def prefect_imported(root: Path, home: str) -> bool:
    code = ("import sys, io, contextlib; from enrich.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): main(['estimate', {str(root / '000')!r}])\n"
            "print('prefect' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "ENRICH_HOME": home})
    return out.stdout.strip().splitlines()[-1] == "True"


if __name__ == "__main__":
    main()
