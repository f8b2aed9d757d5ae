"""Many small, distinct photos for pipeline tests and benchmarks (every file has its own bytes and hash)."""
from __future__ import annotations

from pathlib import Path

from tests.media_factory import make_jpeg


def make_photos(directory: str | Path, n: int, *, size: tuple[int, int] = (32, 24), prefix: str = "p",
                start: int = 0) -> list[Path]:
    """`n` tiny JPEGs named so that walk order is creation order; each differs in colour and EXIF time.

    Photos number `start` .. `start + n - 1`: calls with disjoint ranges make distinct bytes (so a library built
    folder by folder has no duplicates, which the pipeline would copy instead of describing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n - 1)))
    paths = []
    for i in range(start, start + n):
        color = (i * 37 % 256, i * 91 % 256, (i // 7) * 53 % 256)
        taken = f"2023:07:{1 + i // 86400 % 28:02d} {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        paths.append(make_jpeg(directory / f"{prefix}{i - start:0{width}d}.jpg", size=size, color=color, taken_at=taken,
                               xmp=False, icc=False, comment=False))
    return paths
