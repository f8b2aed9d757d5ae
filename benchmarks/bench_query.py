"""How fast `enrich query` answers, as a user runs it (a new process each time), on a warm machine.

Target (issue 2): within 1.5 s. Builds a warehouse of --rows synthetic rows in --parts part files, then runs
`enrich query` --repeat times and prints the timings. Also shows that Prefect was never imported.

    python benchmarks/bench_query.py [--rows 100000] [--parts 100] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enrich.warehouse.store import Warehouse  # noqa: E402


def build(root: Path, rows: int, parts: int) -> None:
    wh = Warehouse(root)
    per = rows // parts
    now = datetime.now(timezone.utc)
    for p in range(parts):
        wh.write_results([
            {"run_id": "bench", "path": f"/photos/{p:04d}/{i:06d}.jpg", "status": "ok" if i % 20 else "error",
             "kind": "image", "model": "gemini-3.1-flash-lite", "input_tokens": 525, "output_tokens": 110,
             "cost_usd": Decimal("0.00029625"), "finished_at": now, "caption": f"photo {i}",
             "tags": ["beach", "sea"], "content_hash": f"{p:04d}{i:060d}"}
            for i in range(per)], "bench", p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--parts", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.rows, args.parts)
        sql = "SELECT status, count(*) AS items, sum(cost_usd) AS usd FROM items GROUP BY status"
        cmd = [sys.executable, "-m", "enrich", "query", sql, "--warehouse", tmp, "--format", "json"]
        subprocess.run(cmd, check=True, capture_output=True)  # warm the page cache and bytecode
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
        probe = subprocess.run([sys.executable, "-c", "import sys; from enrich.cli import main; "
                                f"main(['query', 'SELECT 1', '--warehouse', {tmp!r}]); "
                                "print('prefect imported:', 'prefect' in sys.modules)"],
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    print(f"enrich query over {args.rows:,} rows in {args.parts} parts, {args.repeat} runs (new process each):")
    print(f"  median {statistics.median(times):.3f} s, max {max(times):.3f} s (target: within 1.5 s)")
    print(f"  {probe}")
    print(f"  answer: {out.stdout.strip()}")


if __name__ == "__main__":
    main()
