"""Scale-out: throughput of `enrich run --runner dask` with 1, 2 and 4 worker processes.

Two libraries, each described by the CLI (a new process, Prefect and the local Dask cluster included) against
the emulator in its own process:

  prepare-heavy   12 MP photos (4000x3000): each costs tens of ms of a core to decode and downscale, the
                  emulator answers at once and has no rate limit. Ideal speed-up = min(workers, cores), so the
                  figure is reported next to the cores this machine has (`os.cpu_count()`; on a shared machine
                  fewer are really free, which the figure cannot tell).
  request-bound   tiny photos, the emulator at --rpm R with 100-300 ms latency and the run at --rpm R: the
                  shared rate limit must hold with any number of workers. Figure: achieved / limit (<= 1, and
                  the emulator's 429s from its window: 0).

Throughput is items over the span of the chunk loop (`request_window_s` in the summary): Prefect's and the
cluster's start-up are reported apart (`wall`).

Client CPU per request (request-bound library): the CPU time of the whole run's process tree (the flow, the
Dask scheduler and workers, Prefect's server; `getrusage(RUSAGE_CHILDREN)` around the command) divided by the
requests sent: what the SDK and our code cost per request with every process counted (start-up included; its share
shrinks as the library grows). `benchmarks/bench_overhead.py` splits it (SDK, preparation, ours) in one process.

    python benchmarks/bench_scale_out.py [--photos 24] [--items 300] [--rpm 600] [--workers 1,2,4]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.emulator_process import EmulatorProcess  # noqa: E402
from tests.support.photos import make_photos  # noqa: E402


def run_once(library: Path, home: Path, emu: EmulatorProcess, workers: int, extra: list[str]) -> dict:
    env = {**os.environ, "ENRICH_HOME": str(home), "GOOGLE_GEMINI_BASE_URL": emu.url, "GEMINI_API_KEY": "bench"}
    env.pop("ENRICH_WAREHOUSE", None)
    cmd = [sys.executable, "-m", "enrich", "run", str(library), "--runner", "dask", "--workers", str(workers),
           "--json", "--progress", "off", "--yes", *extra]
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - started
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"run failed with exit code {out.returncode}")
    summary = json.loads(out.stdout)
    summary["wall_s"] = wall
    summary["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=24, help="12 MP photos in the prepare-heavy library")
    ap.add_argument("--items", type=int, default=300, help="tiny photos in the request-bound library")
    ap.add_argument("--rpm", type=int, default=600)
    ap.add_argument("--workers", default="1,2,4")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    cores = os.cpu_count() or 1
    print(f"cores available to this machine: {cores} (shared with other work: speed-ups above it cannot happen)")
    with tempfile.TemporaryDirectory(prefix="enrich-bench-") as tmp:
        tmp = Path(tmp)
        heavy, light = tmp / "heavy", tmp / "light"
        make_photos(heavy, args.photos, size=(4000, 3000))
        make_photos(light, args.items, size=(64, 48), start=100_000)
        base = None
        with EmulatorProcess() as emu:
            print("\nprepare-heavy: 12 MP photos, no rate limit")
            print(f"{'workers':>8} {'items/s':>9} {'speed-up':>9} {'ideal':>6} {'wall s':>7}")
            for n in counts:
                emu.reset()
                s = run_once(heavy, tmp / f"home-h{n}", emu, n, ["--rpm", "0", "--tpm", "0", "--chunk-size", "2"])
                rate = s["items"] / (s["request_window_s"] or s["wall_s"])
                base = base or rate
                print(f"{n:>8} {rate:>9.2f} {rate / base:>9.2f} {min(n, cores):>6} {s['wall_s']:>7.1f}")
        with EmulatorProcess("--rpm", str(args.rpm), "--latency-ms", "100-300") as emu:
            print(f"\nrequest-bound: {args.items} tiny photos, limit {args.rpm} rpm (run paces 2% under it)")
            print(f"{'workers':>8} {'req/min':>9} {'achieved/limit':>15} {'429 (window)':>13} {'wall s':>7} "
                  f"{'CPU ms/request':>15}")
            for n in counts:
                emu.reset()
                s = run_once(light, tmp / f"home-l{n}", emu, n, ["--rpm", str(args.rpm), "--chunk-size", "25"])
                stats = emu.stats()
                rpm = s["requests"] * 60.0 / (s["request_window_s"] or s["wall_s"])
                cpu_ms = s["cpu_s"] * 1000 / max(1, s["requests"])
                print(f"{n:>8} {rpm:>9.1f} {rpm / args.rpm:>15.2f} {stats['rpm_limited']:>13} {s['wall_s']:>7.1f} "
                      f"{cpu_ms:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
