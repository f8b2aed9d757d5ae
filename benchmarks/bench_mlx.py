"""Throughput and memory of the mlx backend: one `generate` per item vs `batch_generate`.

    python benchmarks/bench_mlx.py                     # the tiny random-weight model, N=32 small images
    python benchmarks/bench_mlx.py --model DIR -n 16   # plus a real mlx-vlm model directory

Each (model, mode) runs in a fresh subprocess so that peak RSS (ru_maxrss) belongs to that mode alone.
Every mode first loads the model and runs one warm-up item (not timed; the load time is printed).
Reported: items/s, generated tokens/s, mlx peak memory (mx.get_peak_memory over the timed part) and the
process's peak RSS. Nothing is asserted; the figures are printed.

Notes: mlx-vlm 0.7.10's PaliGemma batches wrongly (every row sees the first image), so for PaliGemma the
batch mode is timed with `force_batch=True` and its texts are meaningless. With random weights every
answer runs to --max-tokens, so both modes generate the same number of tokens.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _rss_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _images(n: int, size: tuple[int, int]) -> list[bytes]:
    from PIL import Image, ImageDraw

    out = []
    for i in range(n):
        img = Image.new("RGB", size, ((i * 53) % 256, (i * 97) % 256, (i * 151) % 256))
        ImageDraw.Draw(img).rectangle([i % size[0] // 2, 2, size[0] - 3, size[1] // 2], fill=(255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def _worker(args: argparse.Namespace) -> dict:
    import mlx.core as mx

    from enrich.backends.base import DescribeRequest, MediaPart
    from enrich.backends.mlx_local import MlxBackend
    from enrich.schemas.descriptions import ImageDescription

    size = tuple(int(x) for x in args.image_size.split("x"))
    images = _images(args.n + 1, size)
    requests = [
        DescribeRequest(key=f"i{i}", prompt="Describe the image.", schema=ImageDescription,
                        media=(MediaPart("image/jpeg", data),), max_output_tokens=args.max_tokens)
        for i, data in enumerate(images)
    ]
    backend = MlxBackend(args.model, retry_invalid=False, force_batch=True)

    async def run() -> dict:
        t0 = time.perf_counter()
        loaded = await backend.load()
        load_s = time.perf_counter() - t0
        await backend.describe(requests[0])  # warm-up: kernels, caches
        timed = requests[1:]
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        if args.mode == "generate":
            results = [await backend.describe(r) for r in timed]
        else:
            results = []
            for i in range(0, len(timed), args.batch_size):
                results += await backend.describe_many(timed[i : i + args.batch_size])
        wall = time.perf_counter() - t0
        gen_tokens = sum(r.usage.output_tokens for r in results if r.usage)
        return {
            "model_type": loaded.model_type,
            "load_s": load_s,
            "items": len(results),
            "wall_s": wall,
            "items_per_s": len(results) / wall,
            "gen_tokens": gen_tokens,
            "tokens_per_s": gen_tokens / wall,
            "mlx_peak_mb": mx.get_peak_memory() / 1e6,
            "rss_peak_mb": _rss_peak_mb(),
            "statuses": sorted({f"{r.status}/{r.error_kind}" for r in results}),
            "distinct_texts": len({r.raw_text if r.raw_text is not None
                                   else (r.description.model_dump_json() if r.description else "")
                                   for r in results}),
        }

    return asyncio.run(run())


def _spawn(model: str, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--_worker", mode, "--model", model, "-n", str(args.n),
           "--max-tokens", str(args.max_tokens), "--batch-size", str(args.batch_size),
           "--image-size", args.image_size]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="an mlx-vlm model directory (in addition to the tiny model)")
    p.add_argument("-n", type=int, default=32, help="timed items per mode (default 32)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8, help="items per batch_generate call (default 8)")
    p.add_argument("--image-size", default="64x48", help="WxH of the generated JPEGs (one shape: one group)")
    p.add_argument("--skip-tiny", action="store_true", help="only the --model given")
    p.add_argument("--_worker", choices=["generate", "batch"], help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._worker:
        args.mode = args._worker
        print(json.dumps(_worker(args)))
        return

    models: list[tuple[str, str]] = []
    tmp = None
    if not args.skip_tiny:
        from tests.support.tiny_vlm import build_tiny_vlm

        tmp = tempfile.TemporaryDirectory(prefix="bench-tiny-vlm-")
        models.append(("tiny (random PaliGemma)", str(build_tiny_vlm(Path(tmp.name) / "tiny-vlm"))))
    if args.model:
        models.append((Path(args.model).name, args.model))

    print(f"N={args.n} images {args.image_size}, max_tokens={args.max_tokens}, batch_size={args.batch_size}, "
          f"platform={sys.platform}, MLX_DISABLE_COMPILE={os.environ.get('MLX_DISABLE_COMPILE', '')!r}")
    header = f"{'model':<26} {'mode':<9} {'load s':>7} {'items/s':>8} {'tok/s':>8} {'mlx peak MB':>11} " \
             f"{'RSS peak MB':>11}  statuses / distinct texts"
    print(header)
    print("-" * len(header))
    for label, path in models:
        for mode in ("generate", "batch"):
            r = _spawn(path, mode, args)
            if "error" in r:
                print(f"{label:<26} {mode:<9} FAILED: {r['error']}")
                continue
            print(f"{label:<26} {mode:<9} {r['load_s']:>7.2f} {r['items_per_s']:>8.1f} {r['tokens_per_s']:>8.0f} "
                  f"{r['mlx_peak_mb']:>11.1f} {r['rss_peak_mb']:>11.1f}  {','.join(r['statuses'])} / "
                  f"{r['distinct_texts']}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
