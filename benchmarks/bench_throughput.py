"""Request throughput against a rate-limited provider: does the pipeline keep it saturated, and lose nothing?

The emulator runs in its own process as the provider would: 300-800 ms latency, 5% 503s and a sliding-window
limit of R requests per minute (it answers 429 beyond it). `enrich run --rpm R` describes a library of photos
against it, as a user runs it (a new process, Prefect and all). Figures, all measured in this one run:

  achieved / limit   requests the provider accepted (not 429) per second, over the span from the first request
                     sent to the last answer received, divided by R/60. Target: at least 0.95.
  lost               files in the library minus rows in the warehouse. Target: 0.
  429s               answers refused by the provider's rate limit (the pipeline paces 2% under R).

    python benchmarks/bench_throughput.py [--rpm 1200] [--items 1500] [--latency-ms 300-800] [--fault-503 0.05]

R=1200 with 1,500 items makes a run of about 80 s of requests (plus Prefect's start-up, reported apart).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.emulator_process import EmulatorProcess  # noqa: E402
from tests.support.photos import make_photos  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rpm", type=int, default=1200)
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--latency-ms", default="300-800")
    ap.add_argument("--fault-503", type=float, default=0.05)
    ap.add_argument("--size", default="320x240", help="photo size (the pipeline prepares each one for real)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    with tempfile.TemporaryDirectory(prefix="enrich-bench-") as tmp:
        tmp = Path(tmp)
        library = tmp / "library"
        for folder in range(0, args.items, 1000):  # camera-like folders of 1,000
            make_photos(library / f"{folder // 1000:03d}", min(1000, args.items - folder), size=(w, h),
                        prefix=f"f{folder // 1000:03d}-", start=folder)  # distinct bytes: no copies
        emu_args = ["--latency-ms", args.latency_ms, "--fault", f"503={args.fault_503}", "--rpm", str(args.rpm),
                    "--seed", "1"]
        with EmulatorProcess(*emu_args) as emu:
            env = {**os.environ, "ENRICH_HOME": str(tmp / "home"), "GOOGLE_GEMINI_BASE_URL": emu.url,
                   "GEMINI_API_KEY": "bench-key"}
            env.pop("ENRICH_WAREHOUSE", None)
            cmd = [sys.executable, "-m", "enrich", "run", str(library), "--rpm", str(args.rpm), "--json",
                   "--progress", "log"]
            print(f"$ python -m enrich.emulator {' '.join(emu_args)}", file=sys.stderr)
            print(f"$ {' '.join(cmd[1:])}   ({args.items} photos {args.size})", file=sys.stderr)
            started = time.monotonic()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            wall = time.monotonic() - started
            stats = emu.stats()
        if proc.returncode != 0:
            print(f"enrich run failed with exit code {proc.returncode}", file=sys.stderr)
            return 1
        summary = json.loads(proc.stdout)
        import duckdb

        from enrich.warehouse.views import connect

        con = connect(tmp / "home" / "warehouse", duckdb.connect())
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT path) FROM results").fetchone()
        by_status = dict(con.execute("SELECT status, count(*) FROM results GROUP BY ALL").fetchall())

    window = summary["request_window_s"]
    refused = stats["rpm_limited"] + stats["faults"]["429"]
    accepted = stats["requests"] - stats["rpm_limited"]
    achieved = accepted / window
    limit = args.rpm / 60.0
    lost = args.items - distinct
    print(f"throughput against the emulator at --rpm {args.rpm}, latency {args.latency_ms} ms, "
          f"{args.fault_503:.0%} 503s ({args.items} photos):")
    print(f"  requests sent {summary['requests']}, accepted by the provider {accepted}, "
          f"503s {stats['by_status'].get('503', 0)}, 429s {refused}")
    print(f"  request span {window:.1f} s (first sent to last answered); whole command {wall:.1f} s "
          f"(Prefect start-up and the summary included)")
    print(f"  achieved {achieved:.2f} req/s, limit {limit:.2f} req/s")
    print(f"  achieved / limit = {achieved / limit:.3f}   (target >= 0.95)")
    print(f"  rows {rows} for {args.items} files ({distinct} distinct), lost {lost}   (target 0); "
          f"statuses {dict(sorted(by_status.items()))}")
    print(f"  concurrency {summary['concurrency']}, retries {summary['retries']}, copied duplicates "
          f"{summary['reused']} (target 0: every photo is distinct, so every one is a request)")
    return 0 if lost == 0 and rows == args.items and summary["reused"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
