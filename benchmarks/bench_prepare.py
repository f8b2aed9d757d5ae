"""Image preparation throughput on 12 MP JPEGs, against the draft-decode limit measured in the same run.

  draft-decode limit   cores / (seconds per 1/8-scale decode of one photo, one thread): no preparation can beat
                       decoding at the smallest scale libjpeg offers on every core.
  real path            photos per second through what the pipeline runs: `prepare_file` (open, EXIF, draft-mode
                       decode, orientation, downscale, sRGB, metadata-free JPEG encode) on the pipeline's thread
                       pool of all cores (Pillow releases the GIL), fed like process_chunk feeds it.
  ratio                real / limit. Target: at least 0.9.

Also printed, to explain the ratio: the same path at a 768 px long side (the old "low" tier, which needs a
1/4-scale decode: why the tier is 500 px now); the rate of bare 1/8-scale decodes on the same pool in the same
rounds (what the machine's free cores actually allowed: on a shared machine it is well under the limit); and
CPU time per photo inside the pool, whose ratio is what the wall-clock ratio would be with idle cores.

    python benchmarks/bench_prepare.py [--photos 48] [--distinct 6] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from enrich.tasks.discover import discover  # noqa: E402
from enrich.tasks.prepare import PrepareOptions, PreparedItem, prepare_file  # noqa: E402
from tests.media_factory import make_large_jpeg  # noqa: E402


def decode_eighth(path: Path) -> None:
    with Image.open(path) as img:
        img.draft("RGB", (img.width // 8, img.height // 8))
        img.load()


def seconds_per(fn, paths) -> float:
    """Mean time per call over `paths`, one thread."""
    t0 = time.perf_counter()
    for p in paths:
        fn(p)
    return (time.perf_counter() - t0) / len(paths)


def pool_rate(pool: ThreadPoolExecutor, fn, items) -> tuple[float, float]:
    """(items per second through `fn` on the pool, CPU seconds per item spent inside `fn`)."""
    cpu: list[float] = []

    def timed(item):
        c0 = time.thread_time()
        result = fn(item)
        cpu.append(time.thread_time() - c0)
        return result

    t0 = time.perf_counter()
    results = list(pool.map(timed, items))
    rate = len(items) / (time.perf_counter() - t0)
    assert all(r is None or isinstance(r, PreparedItem) for r in results), results[:3]
    return rate, sum(cpu) / len(cpu)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--distinct", type=int, default=6, help="distinct photos made (the rest are copies)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0, help="threads (default: all cores, as the pipeline)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    with tempfile.TemporaryDirectory(prefix="enrich-bench-prep-") as tmp:
        tmp = Path(tmp)
        originals = [make_large_jpeg(tmp / f"orig{i}.jpg", seed=i + 1) for i in range(args.distinct)]
        for i in range(args.photos):
            shutil.copyfile(originals[i % len(originals)], tmp / f"photo{i:04d}.jpg")
        photos = sorted(tmp.glob("photo*.jpg"))
        files = [f for f in discover([tmp]) if f.path.rsplit("/", 1)[-1].startswith("photo")]
        with Image.open(photos[0]) as img:
            size = img.size
        low = PrepareOptions()  # the default tier ("low", long side 500): a 1/8-scale decode covers it
        wide = PrepareOptions(max_side=768)  # for comparison: needs a 1/4-scale decode

        by_path = {f.path: f for f in files}
        prep_low = lambda f: prepare_file(f, low)  # noqa: E731
        prep_wide = lambda f: prepare_file(f, wide)  # noqa: E731
        sample = photos[: args.distinct]
        best = {"s_eighth": float("inf"), "s_prep": float("inf"), "decode": 0.0, "real": 0.0, "real_wide": 0.0,
                "cpu_decode": float("inf"), "cpu_real": float("inf"), "cpu_real_wide": float("inf")}

        def keep(name: str, measured: tuple[float, float]) -> None:
            best[name] = max(best[name], measured[0])
            best["cpu_" + name] = min(best["cpu_" + name], measured[1])

        # Rounds interleave every measurement, and each figure keeps its best round: on a shared machine the
        # least-disturbed round is the closest to what the code can do.
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrich-prepare") as pool:
            list(pool.map(prep_low, files[:workers]))  # warm up
            for _ in range(args.rounds):
                best["s_eighth"] = min(best["s_eighth"], seconds_per(decode_eighth, sample))
                best["s_prep"] = min(best["s_prep"], seconds_per(lambda p: prep_low(by_path[str(p)]), sample))
                keep("decode", pool_rate(pool, decode_eighth, photos))
                keep("real", pool_rate(pool, prep_low, files))
                keep("real_wide", pool_rate(pool, prep_wide, files))
        s_eighth, s_prep, real = best["s_eighth"], best["s_prep"], best["real"]
        limit = cores / s_eighth
    print(f"image preparation, {args.photos} photos of {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.0f} MP), "
          f"{cores} cores, {workers} threads, best of {args.rounds} interleaved rounds:")
    print(f"  1/8-scale draft decode: {s_eighth * 1000:.1f} ms per photo on one thread "
          f"-> draft-decode limit {limit:.1f} photos/s ({cores} cores)")
    print(f"  real path, long side {low.max_side} (the default 'low' tier): {real:.1f} photos/s "
          f"({s_prep * 1000:.1f} ms per photo on one thread)")
    print(f"  real / limit = {real / limit:.3f}   (target >= 0.9)")
    print(f"  same path, long side {wide.max_side} (needs a 1/4-scale decode): {best['real_wide']:.1f} photos/s, "
          f"real / limit = {best['real_wide'] / limit:.3f}")
    print(f"  measured on the pool in the same rounds: 1/8-scale decodes alone {best['decode']:.1f} photos/s "
          f"(= {best['decode'] / limit:.2f} of the limit: what this machine's free cores allowed); "
          f"real / that = {real / best['decode']:.3f} ({low.max_side}) and "
          f"{best['real_wide'] / best['decode']:.3f} ({wide.max_side})")
    print(f"  CPU per photo inside the pool: 1/8 decode {best['cpu_decode'] * 1000:.1f} ms, real path "
          f"{best['cpu_real'] * 1000:.1f} ms ({low.max_side}) / {best['cpu_real_wide'] * 1000:.1f} ms "
          f"({wide.max_side}) -> ratio with free cores {best['cpu_decode'] / best['cpu_real']:.3f} "
          f"({low.max_side}) / {best['cpu_decode'] / best['cpu_real_wide']:.3f} ({wide.max_side})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
