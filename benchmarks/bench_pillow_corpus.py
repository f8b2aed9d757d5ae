"""Pillow's own test images (its source distribution's `Tests/images`, ~780 files, many broken on purpose)
through `enrich run --emulator` on a temporary warehouse: a corpus no one here wrote.

Prints the outcome counts per status and error_kind, per file extension what ended `ok`, and every file
skipped as not media, with its first bytes: the goal is that only what nothing here can decode is skipped
(Pillow's identify-only stubs such as BUFR/GRIB/HDF5, EPS without Ghostscript, WMF off Windows, palettes,
fonts and test fixtures that are not images). Also checks that every file got exactly one row.

    python benchmarks/bench_pillow_corpus.py [--sdist pillow-X.tar.gz] [--keep DIR]

Without `--sdist`, the source distribution is fetched with `pip download --no-binary :all: --no-deps pillow`
(a package registry is the only network it needs; the run itself is offline, against the emulator).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fetch_sdist(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "pillow",
                    "-d", str(dest), "-q"], check=True)
    found = sorted(glob.glob(str(dest / "pillow-*.tar.gz")) + glob.glob(str(dest / "Pillow-*.tar.gz")))
    if not found:
        raise SystemExit("pip download gave no pillow source distribution")
    return Path(found[-1])


def unpack_images(sdist: Path, dest: Path) -> Path:
    out = dest / "images"
    out.mkdir()
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) >= 4 and parts[1:3] == ("Tests", "images") and member.isfile():
                target = out.joinpath(*parts[3:])
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is not None:
                    target.write_bytes(src.read())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdist", help="a pillow-*.tar.gz already downloaded")
    ap.add_argument("--keep", help="keep the images and warehouse in this folder")
    args = ap.parse_args()

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="enrich-pillow-corpus-"))
    tmp.mkdir(parents=True, exist_ok=True)
    sdist = Path(args.sdist) if args.sdist else fetch_sdist(tmp)
    images = unpack_images(sdist, tmp)
    files = [p for p in images.rglob("*") if p.is_file() or p.is_symlink()]
    print(f"{sdist.name}: {len(files)} files under Tests/images")

    env = dict(os.environ, ENRICH_HOME=str(tmp / "home"))
    env.pop("GEMINI_API_KEY", None)
    env.pop("GOOGLE_API_KEY", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "enrich", "run", str(images), "--emulator", "--yes", "--json",
                           "--progress", "off", "--warehouse", str(tmp / "warehouse")],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"enrich run exited {proc.returncode}")
    summary = json.loads(proc.stdout)
    print(f"enrich run --emulator: {wall:.1f} s, status {summary['status']}, {summary['items']} rows, "
          f"spent ${summary['spent_usd']}")

    from enrich.warehouse.views import connect

    con = connect(tmp / "warehouse")
    rows = con.execute("SELECT path, kind, status, error_kind, error, mime FROM results").fetchall()
    paths = collections.Counter(r[0] for r in rows)
    twice = [p for p, n in paths.items() if n > 1]
    print(f"rows: {len(rows)} for {len(files)} files; paths with more than one row: {len(twice)}")

    by_outcome = collections.Counter((r[2], r[3] or "") for r in rows)
    print("\noutcomes (status, error_kind):")
    for (status, kind), n in sorted(by_outcome.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {n:5d}  {status:12s} {kind}")

    ok_ext = collections.Counter(Path(r[0]).suffix.lower() or "(none)" for r in rows if r[2] == "ok")
    print("\nok by extension:", ", ".join(f"{ext} {n}" for ext, n in ok_ext.most_common()))
    err_ext = collections.Counter((Path(r[0]).suffix.lower() or "(none)", r[3]) for r in rows if r[2] == "error")
    print("errors by extension and kind:", ", ".join(f"{ext}:{k} {n}" for (ext, k), n in err_ext.most_common()))

    not_media = sorted((r for r in rows if r[2] == "skipped" and r[3] == "not_media"), key=lambda r: r[0])
    print(f"\nskipped as not media: {len(not_media)}")
    for path, *_ in not_media:
        try:
            with open(path, "rb") as f:
                head = f.read(12)
        except OSError:
            head = b""
        print(f"  {Path(path).relative_to(images)!s:60s} {head!r}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if not twice and len(paths) == len(files) else 1


if __name__ == "__main__":
    raise SystemExit(main())
