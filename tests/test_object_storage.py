"""The warehouse on object storage: Delta Lake tables and the lock object on a local server of each kind of store
(started here on 127.0.0.1: moto for S3, Azurite for Azure, tests/support/gcs_emulator.py for GCS), with the
real deltalake, obstore, DuckDB and Prefect. Tests on `store` run on all three; the Dask and migrate tests on S3."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("deltalake")
pytest.importorskip("obstore")
pytest.importorskip("moto.server")

from tests.support.object_stores import S3_ACCESS_KEY as ACCESS_KEY, S3_SECRET_KEY as SECRET_KEY
from tests.support.object_stores import AZURITE_KEY, AzureServer, GcsServer, S3Server
from tests.support.photos import make_photos

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "enrich-wh"
STORES = ("s3", "gs", "az")


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gs_server(tmp_path_factory):
    server = GcsServer(tmp_path_factory.mktemp("gcs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def az_server(tmp_path_factory):
    if not AzureServer.available():
        pytest.skip("Azurite is not installed (scripts/bootstrap.sh installs it with npm)")
    server = AzureServer(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


def _warehouse_on(server, monkeypatch) -> str:
    """The store's standard environment pointed at the local server, and a fresh warehouse URL in its bucket."""
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    server.create_bucket(BUCKET)
    return f"{server.scheme}://{BUCKET}/wh-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def s3(s3_server, monkeypatch):
    return _warehouse_on(s3_server, monkeypatch)


@pytest.fixture(params=STORES)
def store(request, monkeypatch):
    """A fresh warehouse URL on each kind of store in turn (s3://, gs://, az://)."""
    server = request.getfixturevalue(f"{request.param}_server")
    url = _warehouse_on(server, monkeypatch)
    request.node.store_secrets = server.secrets()
    return url


def enrich_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enrich", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def result_row(i: int, run_id: str, path: str | None = None) -> dict:
    from datetime import datetime, timezone
    from decimal import Decimal

    return {"path": path or f"/lib/p{i:04d}.jpg", "profile": "detailed", "content_hash": f"{i:064x}",
            "kind": "image", "status": "ok", "run_id": run_id, "cost_usd": Decimal("0.000010"),
            "input_tokens": 10, "output_tokens": 5, "finished_at": datetime.now(timezone.utc)}


def no_credentials_in(text: str) -> None:
    for secret in (ACCESS_KEY, SECRET_KEY, AZURITE_KEY):  # every store's test credentials (Azurite's key is public,
        assert secret not in text                         # but it is set as AZURE_STORAGE_ACCOUNT_KEY, a secret)


@pytest.mark.usefixtures("prefect_harness")
def test_enrich_run_writes_to_object_storage_and_query_reads_it_back(tmp_path, gemini, enrich_home, store, capsys,
                                                                       monkeypatch):
    from enrich.cli import main

    from enrich.warehouse.object_lock import ObjectLock
    from enrich.warehouse.object_store import ObjectWarehouse

    # a run on another machine died: its lock went stale and its last snapshot says `running`
    ObjectWarehouse(store).write_run({"run_id": "dead-run", "seq": 0, "status": "running", "items": 0})
    dead = ObjectLock(store, "enrich run dead-run", lease_s=0.3).acquire()
    dead._stop.set()  # it stops renewing (killed); it never releases
    time.sleep(0.4)

    make_photos(tmp_path / "lib", 7)
    args = ["run", str(tmp_path / "lib"), "--warehouse", store, "--json", "--yes", "--chunk-size", "3",
            "--profile", "caption", "--profile", "alt-text"]
    assert main(args) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["status"] == "finished" and summary["by_status"] == {"ok": 14}
    assert "took over the warehouse lock" in out.err and "enrich run dead-run" in out.err
    no_credentials_in(out.out + out.err)
    assert gemini.stats()["billed_requests"] == 14

    # the state is read back from the Delta tables: nothing left to send (what a next run would skip)
    assert main(["estimate", str(tmp_path / "lib"), "--warehouse", store, "--json",
                 "--profile", "caption", "--profile", "alt-text"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["files"] == 7 and est["items"] == 0, est

    proc = enrich_cli("query", "SELECT path, profile, status, run_id FROM current ORDER BY path, profile",
                      "--format", "json", env={"ENRICH_WAREHOUSE": store})  # the warehouse from the environment
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    keys = [(r["path"], r["profile"]) for r in rows]
    assert len(keys) == 14 and len(set(keys)) == 14  # exactly one current row per (file, profile)
    assert {r["status"] for r in rows} == {"ok"} and {r["run_id"] for r in rows} == {summary["run_id"]}
    assert main(["runs", "--warehouse", store, "--format", "json"]) == 0
    runs = capsys.readouterr()
    listed = {r["run_id"]: r["status"] for r in json.loads(runs.out)}
    assert listed == {"dead-run": "crashed", summary["run_id"]: "finished"}
    for text in (proc.stdout, proc.stderr, runs.out, runs.err):
        no_credentials_in(text)
    # no credential in any row or run record (every column of every snapshot); the profile views are the
    # folder warehouse's (same SQL)
    from enrich.warehouse.views import read_snapshot

    dump, alt = read_snapshot(store, lambda con: (
        con.sql("SELECT * FROM results UNION ALL BY NAME SELECT * FROM runs_all").to_arrow_table().to_pylist(),
        con.execute("SELECT count(*), count(alt_text) FROM profile_alt_text").fetchone()))
    assert len(dump) == 14 + 2 + 2 and alt == (7, 7)
    no_credentials_in(repr(dump))

    # XMP sidecars from the tables on object storage, beside the photos on this machine; originals untouched
    import hashlib

    photos = sorted((tmp_path / "lib").glob("*.jpg"))
    before_bytes = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}
    monkeypatch.setenv("ENRICH_PROFILE", "caption")  # the profile `items` shows (the tests' default is detailed)
    assert main(["export", "xmp", str(tmp_path / "lib"), "--warehouse", store]) == 0
    assert "images 7" in capsys.readouterr().out
    sidecars = sorted((tmp_path / "lib").glob("*.xmp"))
    assert len(sidecars) == len(photos) == 7
    assert all("dc:description" in x.read_text() for x in sidecars)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in photos} == before_bytes

    # `enrich compact` is Delta's OPTIMIZE: fewer files, the same rows, and a reader holding the version before
    # it still reads that version whole (nothing is deleted)
    from enrich.warehouse.object_store import ObjectWarehouse

    old_snapshot = ObjectWarehouse(store).dataset("results")
    before = old_snapshot.count_rows()
    assert main(["compact", "--warehouse", store]) == 0
    assert "results: " in capsys.readouterr().out
    assert len(ObjectWarehouse(store).table("results").file_uris()) == 1
    assert old_snapshot.to_table(use_threads=False).num_rows == before == 14
    after = read_snapshot(store, lambda con: con.execute(
        "SELECT count(*), count(DISTINCT (path, profile)) FROM current").fetchone())
    assert after == (14, 14)


def test_query_refuses_a_missing_warehouse_and_hides_the_credentials(s3, enrich_home, capsys, tmp_path,
                                                                     monkeypatch):
    from enrich.cli import main

    monkeypatch.setenv("GEMINI_API_KEY", "test-key-123")
    for args in (["search", "bicycle"], ["jobs"], ["run", str(tmp_path), "--mode", "batch"]):
        assert main([*args, "--warehouse", s3]) == 2
        err = capsys.readouterr().err
        assert "needs a warehouse folder" in err, (args, err)
    proc = enrich_cli("query", "SELECT 1", "--warehouse", s3 + "-nothing-here")
    assert proc.returncode != 0 and "there is no warehouse at" in proc.stderr
    bad = enrich_cli("query", "SELECT 1", "--warehouse", f"s3://{ACCESS_KEY}:{SECRET_KEY}@{BUCKET}/x")
    assert bad.returncode != 0 and "AWS environment" in bad.stderr
    no_credentials_in(proc.stderr + bad.stderr)
    from enrich.settings import ConfigError, warehouse_location

    for url in (f"az://{BUCKET}@account.blob.core.windows.net/x?sig={SECRET_KEY}", f"gs://{BUCKET}:443/x",
                f"gs://{BUCKET}/x?access_token={SECRET_KEY}"):
        with pytest.raises(ConfigError, match="with nothing else in it") as refused:
            warehouse_location(url)
        no_credentials_in(str(refused.value))
    assert warehouse_location("gs://bkt//a/b/") == "gs://bkt/a/b"
    assert warehouse_location("az://container") == "az://container"
    # another scheme is refused, never taken for a folder named "s3a:" under the current directory
    for url in ("s3a://bkt/x", "gcs://bkt/x", f"abfss://c@acct.dfs.core.windows.net/x?sig={SECRET_KEY}"):
        with pytest.raises(ConfigError, match="is not supported") as refused:
            warehouse_location(url)
        no_credentials_in(str(refused.value))
    assert warehouse_location(f"file://{tmp_path}/wh") == tmp_path / "wh"
    # what the S3 clients say (an InvalidAccessKeyId body quotes the key) reaches no message unmasked
    from enrich.warehouse.object_store import fail

    err = fail("cannot read", RuntimeError(f"InvalidAccessKeyId <AWSAccessKeyId>{ACCESS_KEY}</AWSAccessKeyId>"))
    assert "***" in str(err)
    no_credentials_in(str(err))


def test_concurrent_chunk_commits_are_atomic_and_a_redone_chunk_appends_nothing(store, enrich_home):
    """Writers on several threads commit chunks of 5 rows while a reader queries the views throughout: every
    snapshot holds whole chunks only and no row twice; a chunk committed again (same run and seq, a redone Dask
    task) is not appended again, even when both attempts race."""
    from enrich.warehouse.object_store import ObjectWarehouse
    from enrich.warehouse.views import read_snapshot

    wh = ObjectWarehouse(store)
    writers, chunks_each, size = 3, 2, 5
    seen: list[tuple[int, int]] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for c in range(chunks_each):
                seq = w * chunks_each + c
                rows = [result_row(seq * size + i, "run-a") for i in range(size)]
                reads = len(seen)
                assert wh.commit_chunk_once(rows, "run-a", seq) is True
                deadline = time.monotonic() + 20
                while len(seen) <= reads and time.monotonic() < deadline:  # the reader reads between commits
                    time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(read_snapshot(store, lambda con: con.execute(
                    "SELECT count(*), count(DISTINCT path) FROM results").fetchone()))
            except Exception as exc:  # noqa: BLE001 - before the first commit there is no table yet
                if "there is no" not in str(exc):
                    errors.append(exc)

    wh.commit_chunk_once([result_row(9999, "run-0")], "run-0", 0)  # the table exists before the reader starts
    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert not errors, errors
    assert len(seen) >= chunks_each + 1, "the reader queried while the writers committed"
    assert len({total for total, _ in seen}) >= 3, "the reader saw the table grow"
    for total, distinct in seen:
        assert total == distinct, "a row seen twice"
        assert (total - 1) % size == 0, f"a partial chunk was visible ({total - 1} rows)"
    total = writers * chunks_each * size
    assert seen[-1][0] <= total + 1

    # redone chunks: sequentially, then two attempts racing; neither appends again
    rows = [result_row(i, "run-a") for i in range(size)]
    assert wh.commit_chunk_once(rows, "run-a", 0) is False
    fresh = [result_row(500 + i, "run-b") for i in range(size)]
    outcomes: list[bool] = []
    racers = [threading.Thread(target=lambda: outcomes.append(ObjectWarehouse(store).commit_chunk_once(fresh, "run-b", 7)))
              for _ in range(2)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert sorted(outcomes) == [False, True]
    # the race made exact: attempt B checked (nothing there) and loaded its snapshot, then attempt A committed;
    # B's commit, built on its snapshot, is refused by Delta's conflict check, and B finds A's commit: no
    # second append (writing by URL would have appended again on the newer version)
    from deltalake import DeltaTable

    twice = [result_row(700 + i, "run-c") for i in range(size)]
    b = ObjectWarehouse(store)
    b._created.add("results")
    stale = b.table("results")
    assert ObjectWarehouse(store).commit_chunk_once(twice, "run-c", 1) is True  # attempt A
    snapshots = iter([stale])  # B's check reads the snapshot it loaded before A's commit
    b.table = lambda name: next(snapshots, None) or DeltaTable(b.table_url(name), storage_options=b.options)
    assert b.commit_chunk_once(twice, "run-c", 1) is False
    count = read_snapshot(store, lambda con: con.execute(
        "SELECT count(*) FILTER (run_id = 'run-a'), count(*) FILTER (run_id = 'run-b'), "
        "count(*) FILTER (run_id = 'run-c') FROM results").fetchone())
    assert count == (total, size, size)
    assert wh.chunk_committed("run-b", 7) and not wh.chunk_committed("run-b", 9)
    # the run's rows of the chunk's (path, profile) keys only: another profile's row of a path is another chunk's
    wh.commit_chunk_once([dict(result_row(500, "run-b"), profile="caption")], "run-b", 8)
    keys = [(r["path"], "detailed") for r in fresh]
    assert sorted(r["path"] for r in wh.chunk_rows("run-b", keys, ["path", "status"])) == sorted(p for p, _ in keys)

    # a Dask task redone after its first attempt committed: the worker describes nothing and reports the rows
    from enrich.flows.dask_runner import ChunkSpec, describe_chunk_on_worker
    from enrich.schemas.vocab import Status
    from enrich.tasks.discover import DiscoveredFile

    files = [DiscoveredFile(r["path"], 1, 0, "image", "image/jpeg", r["content_hash"], Status.PENDING, None, None,
                            profile="detailed") for r in fresh]
    out = describe_chunk_on_worker(ChunkSpec("run-b", 7, store, {}, None, files))
    assert out["already_committed"] and out["requests"] == 0
    assert sorted(r["path"] for r in out["rows"]) == sorted(r["path"] for r in fresh)  # not the caption row


def test_one_run_per_warehouse_across_machines(store, enrich_home, capsys):
    """The lock object: a second holder is refused (or waits with --wait semantics), a stale lock (its holder
    stopped renewing) is taken over, and a holder whose lease was taken fails before its next commit."""
    from enrich.errors import WarehouseLocked
    from enrich.warehouse.location import is_locked, refuse_if_locked, warehouse_lock
    from enrich.warehouse.lock import WarehouseChanged
    from enrich.warehouse.object_lock import ObjectLock

    first = warehouse_lock(store, "enrich run one")
    assert isinstance(first, ObjectLock)
    first.lease_s = 1.0
    first.acquire()
    try:
        assert is_locked(store)
        with pytest.raises(WarehouseLocked, match="in use .*enrich run one"):
            refuse_if_locked(store)
        time.sleep(1.3)  # longer than the lease: the renewals keep it held
        with pytest.raises(WarehouseLocked):
            ObjectLock(store, "enrich run two").acquire(wait=0.3)
        first.verify()
        released = threading.Timer(0.5, first.release)
        released.start()
        t0 = time.monotonic()
        second = ObjectLock(store, "enrich run two").acquire(wait=True)  # --wait: queues behind the first
        assert time.monotonic() - t0 >= 0.4
        err = capsys.readouterr().err
        assert "waiting for the warehouse" in err
        assert "took over" not in err  # a released lock is taken without a word (it is left, marked released)
    finally:
        first.release()
    # the second holder dies without releasing (its renewals stop): the lock goes stale and is taken over
    second._stop.set()
    second._thread.join()
    second.lease_s = 0.5
    second._etag = second._put(second._etag)
    time.sleep(0.7)
    assert not is_locked(store)
    third = ObjectLock(store, "enrich run three").acquire()
    try:
        assert "took over the warehouse lock" in capsys.readouterr().err
        with pytest.raises(WarehouseChanged, match="lost the lock"):
            second.verify()  # its lease ran out: it must not commit beside the new holder
        third.verify()
    finally:
        third.release()
        second._etag = None
    assert not is_locked(store)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("prefect_harness")
def test_dask_workers_commit_chunks_to_s3(tmp_path, gemini, enrich_home, s3):
    """`--runner dask` with the warehouse on S3: 2 worker processes (started after the AWS environment is set,
    so they read it themselves) commit their chunks as Delta transactions; one row per file."""
    pytest.importorskip("prefect_dask")
    from distributed import LocalCluster

    from enrich.flows.enrich_flow import dask_flow
    from enrich.flows.run_options import split_overrides, trusted_settings
    from enrich.settings import load_settings
    from enrich.warehouse.views import read_snapshot

    make_photos(tmp_path / "lib", 8)
    overrides = {"warehouse": s3, "chunk_size": 3, "progress": "off", "concurrency": 4}
    options, _ = split_overrides(overrides)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        with trusted_settings(load_settings().with_overrides(**overrides)):
            summary = dask_flow(address=cluster.scheduler_address)(
                [str(tmp_path / "lib")], options.as_parameters(), runner={"kind": "dask", "workers": 2})
    assert summary["status"] == "finished", summary.get("message")
    n, distinct, ok, runs = read_snapshot(s3, lambda con: con.execute(
        "SELECT (SELECT count(*) FROM results), (SELECT count(DISTINCT path) FROM results), "
        "(SELECT count(*) FROM items WHERE status = 'ok'), (SELECT count(*) FROM runs)").fetchone())
    assert (n, distinct, ok, runs) == (8, 8, 8, 1)
    assert gemini.stats()["billed_requests"] == 8


def test_enrich_migrate_copies_a_folder_warehouse_once(tmp_path, s3, enrich_home, capsys):
    """`enrich migrate --to s3://...`: the folder's live parts (a compacted one instead of those it replaced)
    and runs, then the same views on S3; a second migrate copies nothing."""
    from datetime import datetime, timezone

    from enrich.cli import main
    from enrich.warehouse.compact import compact
    from enrich.warehouse.store import Warehouse
    from enrich.warehouse.views import read_snapshot

    folder = Warehouse(tmp_path / "wh")
    for seq in range(3):
        folder.write_results([result_row(seq * 10 + i, "run-f") for i in range(4)], "run-f", seq)
    folder.write_run({"run_id": "run-f", "seq": 0, "status": "finished", "items": 12,
                      "started_at": datetime.now(timezone.utc)})
    compact(folder, 8)  # 2 of the 3 parts merged into one: the replaced ones must not be copied too
    folder.write_results([result_row(99, "run-f")], "run-f", 3)
    assert any(f.name.startswith("compact-") for f in folder.result_files())
    sql = "SELECT count(*), count(DISTINCT path), (SELECT count(*) FROM runs) FROM results"
    expected = read_snapshot(folder.root, lambda con: con.execute(sql).fetchone())
    assert expected == (13, 13, 1)

    assert main(["migrate", "--warehouse", str(folder.root), "--to", s3]) == 0
    assert "already there" in capsys.readouterr().out
    assert read_snapshot(s3, lambda con: con.execute(sql).fetchone()) == expected
    assert main(["migrate", "--warehouse", str(folder.root), "--to", s3]) == 0
    assert " 0 result parts and 0 run parts copied" in capsys.readouterr().out
    assert read_snapshot(s3, lambda con: con.execute(sql).fetchone()) == expected
