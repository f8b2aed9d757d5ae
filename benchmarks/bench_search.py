"""Full-text search: index build time and warm query time at 100,000 rows (targets: <= 10 s, <= 100 ms).

    python benchmarks/bench_search.py                 # enrich's index (SQLite FTS5) over a 100k-row warehouse
    python benchmarks/bench_search.py --rows 20000
    python benchmarks/bench_search.py --engines       # also the same documents in tantivy and DuckDB's fts,
                                                      # where importable (how the engine was chosen)

Rows are synthetic descriptions (a caption, a description, tags, sometimes visible text) from a vocabulary of
~5,000 words with a skewed frequency, written with the warehouse's own writer in parts of 10,000 rows.
A warm query is the median of 20 runs after one unmeasured run, printing up to 20 hits.
"""
from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COMMON = ("a an the of in on with and at near by under over beside red blue green yellow black white old small "
          "large young wooden stone bicycle car dog cat child woman man beach mountain lake river forest street "
          "city market kitchen table window door garden tree flower sky sunset night snow rain bridge boat "
          "train station church castle park bench lamp sign shop cafe coffee cup plate bread fruit").split()
QUERIES = [("bicycle", {}), ("red bicycle", {}), ('"stone bridge"', {}), ("sunsets over lakes", {}),
           ("zorbalith", {}), ("dog -beach", {}), ("bicycle", {"kind": "image", "since": "2023-06-01"})]


def vocabulary(rng: random.Random, n: int = 5000) -> list[str]:
    syll = ["ka", "lo", "mi", "ra", "te", "zu", "bon", "dal", "fen", "gor", "lith", "mar", "nor", "pel", "sta", "vin"]
    words = set(COMMON)
    while len(words) < n:
        words.add("".join(rng.choice(syll) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def make_docs(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    weights = [1.0 / (i + 1) ** 0.9 for i in range(len(vocab))]
    rng.shuffle(weights)
    for w in COMMON:  # common words stay common
        weights[vocab.index(w)] = 0.05
    t0 = datetime(2023, 1, 1)

    cum = list(itertools.accumulate(weights))

    def words(k: int) -> str:
        return " ".join(rng.choices(vocab, cum_weights=cum, k=k))

    docs = []
    for i in range(n):
        docs.append({
            "path": f"/library/{2019 + i % 6}/{i // 1000:03d}/IMG_{i:06d}.jpg",
            "caption": words(rng.randint(6, 14)).capitalize() + ".",
            "description": words(rng.randint(25, 60)) + ".",
            "tags": rng.choices(vocab, cum_weights=cum, k=rng.randint(3, 8)),
            "visible_text": words(rng.randint(1, 6)) if i % 5 == 0 else None,
            "taken_at": t0 + timedelta(minutes=37 * i),
        })
    docs[n // 2]["caption"] = "A zorbalith sculpture in a town square."  # one rare word
    return docs


def warm_query(fn, runs: int = 20) -> tuple[float, float, Any]:
    """Median wall ms and median CPU ms of `runs` calls after a first, unmeasured one; the first result."""
    hits = fn()
    walls, cpus = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000, hits


def bench_enrich(docs: list[dict], folder: Path) -> None:
    from enrich.warehouse.search_index import Filters, build, search
    from enrich.warehouse.store import Warehouse

    wh = Warehouse(folder / "warehouse")
    finished = datetime(2026, 11, 1, tzinfo=timezone.utc)
    t = time.perf_counter()
    for seq, start in enumerate(range(0, len(docs), 10_000)):
        rows = [{"run_id": "bench", "status": "ok", "kind": "image", "mime": "image/jpeg", "finished_at": finished,
                 "content_hash": f"h{start + j}", **d} for j, d in enumerate(docs[start:start + 10_000])]
        wh.write_results(rows, "bench", seq)
    print(f"warehouse: {len(docs):,} rows written in {time.perf_counter() - t:.1f} s (not part of the build)")
    report = build(wh.root)
    size = report.path.stat().st_size / 1e6
    print(f"enrich index (SQLite FTS5, {report.rows:,} rows): build {report.seconds:.2f} s wall (target <= 10 s; "
          f"{report.read_seconds:.2f} s of it reading the warehouse), {report.cpu_seconds:.2f} s CPU, {size:.0f} MB")
    for q, f in QUERIES:
        ms, cpu, res = warm_query(lambda: search(wh.root, q, Filters(**f), limit=20))
        label = q + (f"  {f}" if f else "")
        print(f"  warm query {label!r:55} {ms:7.2f} ms wall {cpu:7.2f} ms CPU (target <= 100 ms; "
              f"{len(res.hits)} hits, matched {res.matched})")


def bench_tantivy(docs: list[dict], folder: Path) -> None:
    try:
        import tantivy
    except ImportError:
        print("tantivy: not installed (pip install tantivy)")
        return
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("path", stored=True, tokenizer_name="raw")
    for name in ("caption", "description", "tags", "text"):
        sb.add_text_field(name, stored=False, tokenizer_name="en_stem")
    schema = sb.build()
    t, cpu = time.perf_counter(), time.process_time()
    index = tantivy.Index(schema, path=str(folder))  # the default tokenizers include en_stem
    writer = index.writer(heap_size=200_000_000)
    for d in docs:
        writer.add_document(tantivy.Document(path=d["path"], caption=d["caption"], description=d["description"],
                                             tags=" ".join(d["tags"]), text=d["visible_text"] or ""))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    print(f"tantivy: build {time.perf_counter() - t:.2f} s wall, {time.process_time() - cpu:.2f} s CPU "
          f"(the Python loop adding documents included)")
    searcher = index.searcher()
    for q in ("bicycle", "red bicycle", '"stone bridge"'):
        query = index.parse_query(q, ["caption", "description", "tags", "text"])
        ms, cpu, _ = warm_query(lambda: searcher.search(query, 20).hits)
        print(f"  warm query {q!r:30} {ms:7.2f} ms wall {cpu:7.2f} ms CPU")


def bench_duckdb_fts(docs: list[dict], folder: Path) -> None:
    import duckdb
    try:
        con = duckdb.connect(str(folder / "fts.duckdb"))
        try:
            import duckdb_extension_fts  # the offline extension package (pinned to its DuckDB version)

            ext = next(Path(duckdb_extension_fts.__file__).parent.rglob("fts.duckdb_extension"))
            con.execute(f"LOAD '{ext}'")
        except ImportError:
            con.execute("LOAD fts")
    except Exception as exc:
        print(f"duckdb {duckdb.__version__} fts: unavailable ({str(exc).splitlines()[0][:100]})")
        return
    import json

    src = folder / "docs.jsonl"
    with open(src, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"path": d["path"], "caption": d["caption"], "description": d["description"],
                                 "tags": " ".join(d["tags"]), "text": d["visible_text"]}) + "\n")
    con.execute("CREATE TABLE docs AS SELECT * FROM read_json(?, format = 'newline_delimited', columns = "
                "{path: 'VARCHAR', caption: 'VARCHAR', description: 'VARCHAR', tags: 'VARCHAR', text: 'VARCHAR'})",
                [str(src)])
    t, cpu = time.perf_counter(), time.process_time()
    con.execute("PRAGMA create_fts_index('docs', 'path', 'caption', 'description', 'tags', 'text', "
                "stemmer = 'porter', stopwords = 'english', strip_accents = 1, lower = 1, overwrite = 1)")
    print(f"duckdb {duckdb.__version__} fts: build {time.perf_counter() - t:.2f} s wall, "
          f"{time.process_time() - cpu:.2f} s CPU")
    for q in ("bicycle", "red bicycle"):
        sql = ("SELECT path, fts_main_docs.match_bm25(path, ?, conjunctive := 1) AS s FROM docs "
               "WHERE s IS NOT NULL ORDER BY s DESC LIMIT 20")
        ms, cpu, _ = warm_query(lambda: con.execute(sql, [q]).fetchall())
        print(f"  warm query {q!r:30} {ms:7.2f} ms wall {cpu:7.2f} ms CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--engines", action="store_true", help="also time tantivy and DuckDB fts where importable")
    ap.add_argument("--only-engines", action="store_true", help=argparse.SUPPRESS)  # another venv's DuckDB
    args = ap.parse_args()
    print("load average before: %.1f %.1f %.1f on %d CPUs" % (*os.getloadavg(), os.cpu_count() or 0))
    t = time.perf_counter()
    docs = make_docs(args.rows)
    print(f"{args.rows:,} synthetic descriptions made in {time.perf_counter() - t:.1f} s")
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        tmp = Path(tmp)
        if not args.only_engines:
            bench_enrich(docs, tmp)
        if args.engines or args.only_engines:
            (tmp / "tantivy").mkdir()
            bench_tantivy(docs, tmp / "tantivy")
            bench_duckdb_fts(docs, tmp)
    print("load average after: %.1f %.1f %.1f (wall times are inflated by other work on the machine; "
          "CPU times are not)" % os.getloadavg())


if __name__ == "__main__":
    main()
