"""What an unchanged nightly rerun costs before any model call: scanning (with and without the hash cache),
loading what the warehouse knows, and deciding per file. Prints the figures; asserts nothing.

    python benchmarks/bench_incremental.py [--files 2000] [--size-kb 256] [--parts 20]

The files are real JPEG heads padded to --size-kb, so sniffing sees media and hashing reads every byte.
They sit in the page cache right after being written, so "without cache" is the best case for hashing:
on a real disk of photos the cache saves far more (no read of the file body at all).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from enrich.tasks.discover import discover  # noqa: E402
from enrich.tasks.hash_cache import HashCache  # noqa: E402
from enrich.tasks.incremental import Planner  # noqa: E402
from enrich.warehouse.state import load_state  # noqa: E402
from enrich.warehouse.store import Warehouse  # noqa: E402


def make_library(root: Path, files: int, size_kb: int) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(buf, "JPEG")
    head = buf.getvalue()
    for i in range(files):
        d = root / f"d{i // 200:03d}"
        d.mkdir(parents=True, exist_ok=True)
        pad = os.urandom(max(0, size_kb * 1024 - len(head)))
        (d / f"p{i:06d}.jpg").write_bytes(head + pad)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size-kb", type=int, default=256)
    ap.add_argument("--parts", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lib = tmp / "lib"
        make_library(lib, a.files, a.size_kb)
        mb = a.files * a.size_kb / 1024

        plain, t_plain = timed(lambda: list(discover([lib])))
        cache = HashCache(tmp / "hashes.sqlite")
        _, t_fill = timed(lambda: list(discover([lib], hash_cache=cache)))
        cache.flush()
        cached, t_cached = timed(lambda: list(discover([lib], hash_cache=cache)))
        assert [f.content_hash for f in cached] == [f.content_hash for f in plain]
        cache.close()

        wh = Warehouse(tmp / "warehouse")
        per = len(plain) // a.parts + 1
        for p in range(a.parts):
            chunk = plain[p * per:(p + 1) * per]
            wh.write_results([{"run_id": "r1", "path": f.path, "content_hash": f.content_hash, "status": "ok",
                               "size_bytes": f.size, "kind": f.kind, "enrichment_version": "v1",
                               "cost_usd": Decimal("0.0001"), "caption": "x" * 60} for f in chunk], "r1", p + 1)
        state, t_state = timed(lambda: load_state(wh))
        planner = Planner(state, "r2", lambda kind: "v1")
        admitted, t_plan = timed(lambda: [f for f in cached if planner.admit(f)])
        assert not admitted and planner.unchanged == len(cached)

        print(f"unchanged rerun over {a.files:,} files ({mb:,.0f} MB), {a.parts} parts:")
        print(f"  scan, hashing every byte:        {t_plain:6.2f} s  ({mb / t_plain:,.0f} MB/s, page cache warm)")
        print(f"  scan, filling the hash cache:    {t_fill:6.2f} s")
        print(f"  scan, hash cache warm:           {t_cached:6.2f} s  ({t_plain / t_cached:.1f}x faster)")
        print(f"  load warehouse state:            {t_state:6.2f} s")
        print(f"  plan (all unchanged):            {t_plan * 1000:6.1f} ms ({t_plan / a.files * 1e6:.1f} us/file)")
        print(f"  files needing a model call: {len(admitted)}")


if __name__ == "__main__":
    main()
