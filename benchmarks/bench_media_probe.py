"""How fast the header-only probes of tasks/media_info.py are (what `enrich estimate` and preparation pay per
audio, video or document file), and that they do not grow with the media's length.

Builds --files files of each kind (half short, half long: 5 s vs 10 min of WAV, 5 s vs 10 min of MP3 frames,
1 vs 12 PDF pages ...) in a temp folder, then probes each one (cold process cache aside: the files were just
written) and prints per-kind milliseconds per file.

    python benchmarks/bench_media_probe.py [--files 100]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enrich.tasks.media_info import probe  # noqa: E402
from tests.media_factory import make_mp3, make_mp4, make_pdf, make_text, make_wav, make_webm  # noqa: E402

KINDS = {
    # name: (kind, mime, builder(path, long?))
    "wav": ("audio", "audio/wav", lambda p, long: make_wav(p, 600 if long else 5, tone_hz=None)),
    "mp3": ("audio", "audio/mp3", lambda p, long: make_mp3(p, 600 if long else 5)),
    "mp4": ("video", "video/mp4", lambda p, long: make_mp4(p, 600 if long else 5)),
    "webm": ("video", "video/webm", lambda p, long: make_webm(p, 600 if long else 5)),
    "pdf": ("document", "application/pdf", lambda p, long: make_pdf(p, 12 if long else 1)),
    "txt": ("document", "text/plain", lambda p, long: make_text(p, chars=200_000 if long else 2_000)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100, help="files per format (half short, half long)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="enrich-bench-probe-") as tmp:
        root = Path(tmp)
        print(f"{'format':<6} {'length':<6} {'files':>5} {'MB':>8} {'ms/file median':>15} {'p95':>8}")
        for name, (kind, mime, build) in KINDS.items():
            for long in (False, True):
                n = max(1, args.files // 2)
                paths = [build(root / f"{name}-{int(long)}-{i}.{name}", long) for i in range(n)]
                size = sum(p.stat().st_size for p in paths) / 1e6
                times = []
                for p in paths:
                    t = time.perf_counter()
                    info = probe(p, kind, mime)
                    times.append((time.perf_counter() - t) * 1000)
                    assert info is not None, p
                times.sort()
                p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
                print(f"{name:<6} {'long' if long else 'short':<6} {n:>5} {size:>8.1f} "
                      f"{statistics.median(times):>15.3f} {p95:>8.3f}")
                for p in paths:
                    p.unlink()


if __name__ == "__main__":
    main()
