"""Orchestration overhead per item, and peak memory against library size.

A zero-latency emulator in its own process, tiny distinct photos (16x12) in folders of 1,000, the whole flow (Prefect,
discovery with hashing, preparation, the describer, Parquet) in a fresh child process per library size.

What is measured, per item, over the flow body (open_run .. close_run; Prefect's fixed start-up is reported
apart):
  wall            elapsed ms per item: the total.
  cpu             CPU ms per item of the pipeline's process (all its threads).
  sdk             CPU ms per item inside the backend call (google-genai building the request, HTTP, parsing the
                  answer), measured on every step of the SDK's coroutine with thread CPU clocks.
  prep            CPU ms per item inside prepare_file (decode, resize, encode of the tiny photo).
  overhead        cpu - sdk - prep: everything that is ours and is neither the model call nor the pixels:
                  discovery (walk, sniff, SHA-256), Prefect's client side (one task run per chunk), the describer
                  (tenacity, limiter, budget, concurrency, futures), rows, Parquet, progress. Target: < 1 ms.
  prefect server  CPU ms per item of Prefect's ephemeral API server (a child process), for completeness.
Peak memory is the pipeline process's peak RSS (ru_maxrss) from start-up to the end of close_run (Prefect's
server is a separate process). Rows are written per chunk and never accumulated, so it must not grow with the
library beyond what is in flight; the marginal figures between the two sizes (per item: time; per 10,000
items: MB) are free of fixed costs.

    python benchmarks/bench_overhead.py [--sizes 10000,100000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FOLDER = 1000
CLK = os.sysconf("SC_CLK_TCK")


# -- in the child ---------------------------------------------------------------------------------------------
class _Timed:
    """Await a coroutine, adding the thread CPU time of each of its steps to `acc` (a one-item list)."""

    __slots__ = ("coro", "acc")

    def __init__(self, coro, acc: list[float]) -> None:
        self.coro, self.acc = coro, acc

    def __await__(self):
        it = self.coro.__await__()
        value, exc = None, None
        while True:
            t0 = time.thread_time()
            try:
                yielded = it.throw(exc) if exc is not None else it.send(value)
            except StopIteration as stop:
                self.acc[0] += time.thread_time() - t0
                return stop.value
            except BaseException:
                self.acc[0] += time.thread_time() - t0
                raise
            self.acc[0] += time.thread_time() - t0
            try:
                value, exc = (yield yielded), None
            except BaseException as e:  # noqa: BLE001 - thrown into the coroutine
                value, exc = None, e


def _children_cpu_s() -> float:
    """CPU seconds of this process's descendants (Prefect's server), read from /proc."""
    me = os.getpid()
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK
    total = 0.0
    for pid in times:
        p = pid
        while p in parents and p != me and p > 1:
            p = parents[p]
        if p == me and pid != me:
            total += times[pid]
    return total


def child(root: str) -> None:
    from enrich.prefect_env import configure_prefect_env

    configure_prefect_env()  # what `enrich run` does before Prefect is imported
    import enrich.flows.enrich_flow as ef
    import enrich.flows.pipeline as pl

    sdk = [0.0]
    prep = [0.0]  # a running sum: a list of per-item figures would itself grow with the library
    prep_lock = threading.Lock()
    marks: dict[str, float] = {}
    real_create, real_prepare, real_open, real_close = pl.create_backend, pl.prepare_file, ef.open_run, ef.close_run

    def create_backend(spec, settings):
        backend = real_create(spec, settings)
        describe = backend.describe
        backend.describe = lambda request: _Timed(describe(request), sdk)
        return backend

    def prepare_file(file, options):
        c0 = time.thread_time()
        try:
            return real_prepare(file, options)
        finally:
            spent = time.thread_time() - c0
            with prep_lock:
                prep[0] += spent

    def open_run(*a, **k):
        marks.update(wall0=time.perf_counter(), cpu0=time.process_time(), kids0=_children_cpu_s())
        return real_open(*a, **k)

    def close_run(*a, **k):
        try:
            return real_close(*a, **k)
        finally:
            marks.update(wall1=time.perf_counter(), cpu1=time.process_time(), kids1=_children_cpu_s(),
                         peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    pl.create_backend, pl.prepare_file, ef.open_run, ef.close_run = create_backend, prepare_file, open_run, close_run
    started = time.perf_counter()
    summary = ef.enrich_flow([root], {"rpm": 0, "tpm": 0, "progress": "off"})
    total_wall = time.perf_counter() - started
    from enrich.warehouse.views import connect

    # counted after the peak was taken: a DuckDB view over every part file is the query side's cost, not the run's
    rows = connect(summary["warehouse"]).execute("SELECT count(*) FROM results").fetchone()[0]
    print(json.dumps({
        "items": summary["items"], "rows": rows, "status": summary["status"], "by_status": summary["by_status"],
        "requests": summary["requests"],
        "wall_s": marks["wall1"] - marks["wall0"], "cpu_s": marks["cpu1"] - marks["cpu0"],
        "sdk_s": sdk[0], "prep_s": prep[0], "server_s": marks["kids1"] - marks["kids0"],
        "startup_s": total_wall - (marks["wall1"] - marks["wall0"]),
        "peak_rss_mb": marks["peak"],
    }))


# -- in the parent ----------------------------------------------------------------------------------------------
def make_library(root: Path, n: int) -> None:
    from tests.support.photos import make_photos

    for start in range(0, n, FOLDER):
        folder = root / f"{start // FOLDER:04d}"
        if not folder.exists():
            make_photos(folder, min(FOLDER, n - start), size=(16, 12), prefix=f"f{start // FOLDER:04d}-",
                        start=start)  # every photo distinct: no duplicate is copied instead of described


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    from tests.support.emulator_process import EmulatorProcess

    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="enrich-bench-overhead-") as tmp, EmulatorProcess() as emu:
        tmp = Path(tmp)
        for n in sizes:
            library = tmp / f"lib{n}"
            t0 = time.perf_counter()
            make_library(library, n)
            print(f"made {n:,} photos in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            env = {**os.environ, "ENRICH_HOME": str(tmp / f"home{n}"), "GOOGLE_GEMINI_BASE_URL": emu.url,
                   "GEMINI_API_KEY": "bench-key"}
            env.pop("ENRICH_WAREHOUSE", None)
            emu.reset()
            out = subprocess.run([sys.executable, __file__, "--child", str(library)], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, text=True, check=True).stdout
            results[n] = r = json.loads(out.strip().splitlines()[-1])
            assert r["rows"] == n and r["status"] == "finished", r
            # Every item must have gone to the model: a copied duplicate would skip the call and flatter the figure.
            assert r["requests"] >= n and r["by_status"] == {"ok": n}, r

    print("pipeline overhead, zero-latency emulator (own process), 16x12 photos in folders of 1,000:")
    print(f"  {'items':>8} {'wall ms':>8} {'cpu ms':>7} {'sdk ms':>7} {'prep ms':>8} {'overhead':>9} "
          f"{'server':>7} {'start s':>8} {'peak RSS':>9}   (per item; overhead = cpu - sdk - prep)")
    for n, r in results.items():
        per = {k: r[k] / n * 1000 for k in ("wall_s", "cpu_s", "sdk_s", "prep_s", "server_s")}
        over = per["cpu_s"] - per["sdk_s"] - per["prep_s"]
        print(f"  {n:>8,} {per['wall_s']:>8.3f} {per['cpu_s']:>7.3f} {per['sdk_s']:>7.3f} {per['prep_s']:>8.3f} "
              f"{over:>9.3f} {per['server_s']:>7.3f} {r['startup_s']:>8.1f} {r['peak_rss_mb']:>7.0f} MB")
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        ra, rb = results[a], results[b]
        d = b - a

        def marginal(k):
            return (rb[k] - ra[k]) / d * 1000

        over = marginal("cpu_s") - marginal("sdk_s") - marginal("prep_s")
        print(f"  marginal per item from {a:,} to {b:,}: wall {marginal('wall_s'):.3f} ms, cpu {marginal('cpu_s'):.3f} ms, "
              f"sdk {marginal('sdk_s'):.3f} ms, prep {marginal('prep_s'):.3f} ms, overhead {over:.3f} ms "
              f"(target < 1 ms), prefect server {marginal('server_s'):.3f} ms")
        growth = (rb["peak_rss_mb"] - ra["peak_rss_mb"]) / (d / 10_000)
        print(f"  peak RSS {ra['peak_rss_mb']:.0f} MB at {a:,} items, {rb['peak_rss_mb']:.0f} MB at {b:,}: "
              f"ratio {rb['peak_rss_mb'] / ra['peak_rss_mb']:.2f}, growth {growth:.2f} MB per 10,000 items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
