"""Pipeline pieces that need no Prefect: roots, bounded queues, stopping before anything is sent."""
import os

from enrich.flows.pipeline import independent_roots


def test_roots_inside_other_roots_and_duplicates_are_dropped(tmp_path):
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (a / "f.jpg").write_bytes(b"x")
    link = tmp_path / "link-to-sub"
    os.symlink(a / "sub", link)
    roots = [str(a / "sub"), str(a), str(tmp_path / "b"), str(a), str(link), str(a / "f.jpg"), str(tmp_path / "ab")]
    assert independent_roots(roots) == [str(a), str(tmp_path / "b"), str(tmp_path / "ab")]


def test_a_sibling_with_a_common_prefix_is_not_inside(tmp_path):
    roots = [str(tmp_path / "photos"), str(tmp_path / "photos-2024")]
    assert independent_roots(roots) == roots


def _run_chunk(lib, **overrides):
    from enrich.settings import load_settings
    from enrich.flows.pipeline import close_run, discover_files, open_run, process_chunk

    settings = load_settings().with_overrides(rpm=0, tpm=0, progress="off", **overrides)
    ctx = open_run([str(lib)], settings)
    try:
        files = list(discover_files(ctx))
        return ctx, files, (lambda: process_chunk(ctx.run_id, files)), (lambda: close_run(ctx))
    except BaseException:
        close_run(ctx)
        raise


def test_prepared_items_alive_at_once_never_exceed_the_bounded_queue(tmp_path, gemini, enrich_home, monkeypatch):
    import threading
    import weakref

    import enrich.flows.pipeline as pipeline
    from tests.support.photos import make_photos

    make_photos(tmp_path / "lib", 40)
    gemini.set_config(latency_ms=(20, 20))
    alive, peak, lock = [0], [0], threading.Lock()
    real_prepare = pipeline.prepare_file

    def counting_prepare(file, options):
        item = real_prepare(file, options)
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])

        def gone():
            with lock:
                alive[0] -= 1

        weakref.finalize(item, gone)
        return item

    monkeypatch.setattr(pipeline, "prepare_file", counting_prepare)
    ctx, files, run, close = _run_chunk(tmp_path / "lib", concurrency=2, prepare_workers=1, chunk_size=40)
    try:
        stats = run()
    finally:
        close()
    assert stats.items == 40 and stats.by_status == {"ok": 40}
    assert ctx.ready_capacity == 2 * 2 + 1
    assert 2 <= peak[0] <= ctx.ready_capacity, "a whole chunk of 40 was never held in memory at once"


def test_a_stopped_run_prepares_nothing_more_and_records_every_file_of_the_chunk(tmp_path, gemini, enrich_home,
                                                                               monkeypatch):
    import enrich.flows.pipeline as pipeline
    from tests.support.photos import make_photos

    make_photos(tmp_path / "lib", 12)
    (tmp_path / "lib" / "notes.json").write_text("{}")  # a sidecar: skipped, not media
    monkeypatch.setattr(pipeline, "prepare_file", lambda *a: (_ for _ in ()).throw(AssertionError("prepared")))
    ctx, files, run, close = _run_chunk(tmp_path / "lib")
    try:
        ctx.describer.stop("interrupted by a test")
        stats = run()
    finally:
        close()
    assert stats.items == 13 and stats.by_status == {"interrupted": 12, "skipped": 1}
    assert gemini.stats()["requests"] == 0
