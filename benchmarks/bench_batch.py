"""Batch mode: what it costs against sync, and how fast items are packed into jobs.

1. Cost: the same library described twice against the emulator (in its own process, with the packaged
   prices, so its ledger adds up billed USD): once with `--mode sync`, once with `--mode batch --until-done`.
   Prints batch cost per photo / sync cost per photo from the emulator's billing (target 0.50 within 1%),
   and the same ratio from the warehouse rows.
2. Packing: N small prepared photos (one real prepared 16x12 JPEG, N distinct content hashes) packed into
   jobs by tasks/batch.JobPacker: lines built with the SDK, JSONL spill past 20 MB, manifests written,
   jobs created at the emulator. Prints items/s of packing alone (target >= 2,000), the time of creating
   the jobs apart, preparation time per photo apart (prepare_file on real photos), and resident memory after 10%,
   50% and 100% of the items (flat: it must not grow with N).

    python benchmarks/bench_batch.py [--photos 200] [--pack 100000]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Resident memory now (VmRSS), else the peak so far."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(lib: Path, mode: str, **overrides):
    from enrich.flows.pipeline import close_run, discover_files, finish_batch, open_run, process_chunk, run_summary
    from enrich.settings import load_settings
    from enrich.tasks.discover import iter_batches

    settings = load_settings().with_overrides(rpm=0, tpm=0, progress="off", mode=mode, batch_poll_initial_s=0.05,
                                              batch_poll_max_s=0.2, **overrides)
    ctx = open_run([str(lib)], settings)
    status = None
    try:
        for files in iter_batches(discover_files(ctx), settings.chunk_size):
            process_chunk(ctx.run_id, files)
        finish_batch(ctx, until_done=True)
    finally:
        status = close_run(ctx, status)
    return run_summary(ctx, status)


def warehouse_cost(warehouse: Path) -> Decimal:
    from enrich.warehouse.views import read_snapshot

    return read_snapshot(warehouse, lambda con: con.execute("SELECT sum(cost_usd) FROM results").fetchone()[0])


def cost_ratio(photos: int, emu) -> None:
    from enrich.pricing import load_prices
    from enrich.settings import load_settings
    from tests.support.photos import make_photos

    prices = load_prices(load_settings().config_dir)
    emu.set_config(prices={m: {"input": float(p.input), "output": float(p.output),
                               "input_audio": float(p.input_audio)} for m, p in prices.models.items()
                           if not m.endswith("*")}, batch_running_polls=1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    lib = tmp / "lib"
    make_photos(lib, photos, size=(320, 240))
    billed = {}
    cost = {}
    for mode in ("sync", "batch"):
        os.environ["ENRICH_HOME"] = str(tmp / mode)
        emu.reset()
        s = run_once(lib, mode)
        stats = emu.stats()
        billed[mode] = stats["billed_usd"]["batch" if mode == "batch" else "standard"]
        cost[mode] = warehouse_cost(tmp / mode / "warehouse")
        print(f"{mode}: {photos} photos, {stats['billed_requests'] + stats['batch']['billed_requests']} billed "
              f"requests, emulator billed ${billed[mode]:.6f} (${billed[mode] / photos:.8f} per photo), "
              f"warehouse ${cost[mode]:.6f}; status {s['status']}")
    print(f"batch / sync cost per photo, emulator billing: {billed['batch'] / billed['sync']:.4f} (target 0.50 +- 1%)")
    print(f"batch / sync cost per photo, warehouse rows:   {cost['batch'] / cost['sync']:.4f}")


def packing(n: int, emu) -> None:
    from dataclasses import replace

    from enrich.backends import create_backend
    from enrich.backends.gemini_batch import GeminiBatchClient
    from enrich.budget import Budget
    from enrich.pricing import load_prices
    from enrich.schemas.descriptions import DESCRIPTION_SCHEMAS
    from enrich.schemas.vocab import Status
    from enrich.settings import load_settings
    from enrich.tasks.batch import BatchOptions, JobPacker
    from enrich.tasks.discover import discover
    from enrich.tasks.prepare import PrepareOptions, prepare_file
    from enrich.tasks.prepared import PreparedItem
    from enrich.tasks.records import RunInfo, schema_hash, short_hash
    from enrich.warehouse.jobs import JobStore
    from enrich.warehouse.store import Warehouse
    from tests.support.photos import make_photos

    tmp = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    os.environ["ENRICH_HOME"] = str(tmp / "home")
    emu.reset()
    settings = load_settings().with_overrides(mode="batch", batch_enqueued_tokens={"default": 10**12})
    make_photos(tmp / "photos", 200, size=(16, 12))
    files = list(discover([str(tmp / "photos")], workers=1))
    opts = PrepareOptions.from_settings(settings)
    t = time.perf_counter()
    prepared = [prepare_file(f, opts) for f in files]
    prep_s = (time.perf_counter() - t) / len(files)
    sample = prepared[0]
    assert isinstance(sample, PreparedItem)

    prices = load_prices(settings.config_dir)
    schemas = dict(DESCRIPTION_SCHEMAS)
    prompts = {k: settings.prompt_for(k) for k in schemas}
    info = RunInfo(run_id="bench", backend="gemini", model=settings.model, resolution=settings.resolution,
                   price_date=prices.date, batch=True,
                   prompt_hashes=tuple(sorted((k, short_hash(p)) for k, p in prompts.items())),
                   schema_hashes=tuple(sorted((k, schema_hash(s)) for k, s in schemas.items())))
    backend = create_backend(settings.model, settings)
    client = GeminiBatchClient(backend)
    store = JobStore(Warehouse(settings.warehouse))
    packer = JobPacker(client, store, info, prices.price(settings.model),
                       BatchOptions.from_settings(settings, prompts, schemas), Budget(None))
    create_s = [0.0]
    real_create = packer._create

    def timed_create(job, job_id):
        t0 = time.perf_counter()
        try:
            return real_create(job, job_id)
        finally:
            create_s[0] += time.perf_counter() - t0

    packer._create = timed_create
    marks = {n // 10: None, n // 2: None, n: None}
    base = sample.file
    t = time.perf_counter()
    for i in range(1, n + 1):
        f = replace(base, path=f"/bench/p{i:07d}.jpg", content_hash=f"{i:064x}", status=Status.PENDING)
        packer.add(PreparedItem(file=f, media=sample.media, meta=dict(sample.meta),
                                media_tokens_hint=sample.media_tokens_hint))
        if i in marks:
            marks[i] = rss_mb()
    packer.close()
    total = time.perf_counter() - t
    pack = total - create_s[0]
    jobs = packer.stats.jobs
    print(f"packing: {n} items into {len(jobs)} jobs ({', '.join(sorted({j.input for j in jobs}))}), "
          f"{n / pack:,.0f} items/s packing alone ({pack:.1f} s; target >= 2,000/s), creating the jobs "
          f"(upload + create at the emulator) {create_s[0]:.1f} s apart")
    print(f"preparation (apart): {prep_s * 1000:.2f} ms per 16x12 photo (prepare_file, one thread)")
    print("RSS while packing: " + ", ".join(f"{mb:.0f} MB after {k:,}" for k, mb in marks.items())
          + f"; peak of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--pack", type=int, default=100_000)
    args = ap.parse_args()
    from tests.support.emulator_process import EmulatorProcess

    emu = EmulatorProcess()
    os.environ["GOOGLE_GEMINI_BASE_URL"] = emu.url
    os.environ["GEMINI_API_KEY"] = "bench"
    try:
        cost_ratio(args.photos, emu)
        packing(args.pack, emu)
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
