"""A mixed library for estimate-accuracy checks, and a run of the pipeline without Prefect.

Shared by tests/test_estimate.py and benchmarks/bench_estimate_accuracy.py.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.media_factory import (
    avif_supported, make_avif, make_gif, make_heic, make_jpeg, make_png, make_webp,
    make_zero_byte,
)


def make_mixed_image_library(root: str | os.PathLike[str], *, with_bad_files: bool = True) -> dict[str, str]:
    """Images of several sizes and formats, chosen around Gemini 2.x tile boundaries at each resolution's
    downscale (768 / 1536 / 3072). Returns {relative path: what it is}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def add(name: str, what: str) -> None:
        made[name] = what

    make_jpeg(root / "camera.jpg", size=(2000, 1500)); add("camera.jpg", "jpeg 2000x1500")
    make_jpeg(root / "rotated.jpg", size=(1600, 1200), orientation=6); add("rotated.jpg", "jpeg 1600x1200, EXIF 6")
    make_jpeg(root / "panorama.jpg", size=(3100, 800)); add("panorama.jpg", "jpeg 3100x800")
    make_jpeg(root / "edge.jpg", size=(770, 770)); add("edge.jpg", "jpeg 770x770, just over one tile")
    make_png(root / "screenshot.png", size=(800, 600), alpha=True); add("screenshot.png", "png 800x600, alpha")
    make_png(root / "icon.png", size=(300, 200)); add("icon.png", "png 300x200 (small)")
    make_webp(root / "banner.webp", size=(1200, 400)); add("banner.webp", "webp 1200x400")
    make_gif(root / "anim.gif", size=(500, 500)); add("anim.gif", "gif 500x500, 2 frames")
    make_heic(root / "phone.heic", size=(1280, 960)); add("phone.heic", "heic 1280x960")
    if avif_supported():
        make_avif(root / "photo.avif", size=(640, 480)); add("photo.avif", "avif 640x480")
    if with_bad_files:
        make_zero_byte(root / "empty.jpg"); add("empty.jpg", "empty (error, not billed)")
        (root / "notes.json").write_text('{"not": "media"}'); add("notes.json", "not media (skipped)")
    return made


def run_pipeline(roots: list[str], settings: Any, *, chunk_size: int = 50) -> Any:
    """The run's plain functions (flows/pipeline.py), without Prefect: open, every chunk, close."""
    from enrich.flows.pipeline import close_run, discover_files, open_run, process_chunk
    from enrich.tasks.discover import iter_batches

    ctx = open_run(roots, settings)
    status = "failed"
    try:
        for files in iter_batches(discover_files(ctx), chunk_size):
            process_chunk(ctx.run_id, files)
        status = None
    finally:
        close_run(ctx, status)
    return ctx
