"""Regenerate the bundled sample library (samples/library). Deterministic; run from the project root:

    python samples/make_samples.py

Small synthetic photos of every supported format (with EXIF GPS and camera data, so the demo shows the
metadata being extracted locally and stripped before upload), a voice memo, PDFs, a note and a short video,
plus bad files (a cut-off JPEG, text named .png, a password-protected PDF) to show per-item errors.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.media_factory import (  # noqa: E402
    make_encrypted_pdf, make_gif, make_heic, make_jpeg, make_mp4, make_pdf, make_png, make_text,
    make_truncated_jpeg, make_wav, make_webp,
)

LIBRARY = Path(__file__).resolve().parent / "library"


def main() -> None:
    shutil.rmtree(LIBRARY, ignore_errors=True)
    (LIBRARY / "2025-summer").mkdir(parents=True)
    (LIBRARY / "screens").mkdir()
    make_jpeg(LIBRARY / "2025-summer" / "beach.jpg", color=(40, 120, 210), exif_gps=(43.2965, 5.3698))
    make_jpeg(LIBRARY / "2025-summer" / "forest.jpg", color=(30, 140, 60), exif_gps=(46.5, 7.9), orientation=6)
    make_jpeg(LIBRARY / "2025-summer" / "sunset.jpg", color=(230, 110, 40), size=(800, 600))
    make_webp(LIBRARY / "2025-summer" / "harbour.webp")
    make_heic(LIBRARY / "2025-summer" / "phone.heic", size=(480, 360))
    make_png(LIBRARY / "screens" / "screenshot.png", color=(240, 240, 240))
    make_gif(LIBRARY / "screens" / "loading.gif")
    make_truncated_jpeg(LIBRARY / "2025-summer" / "cut-off-download.jpg")
    (LIBRARY / "screens" / "not-an-image.png").write_text("this file is text, named like a PNG\n" * 5)
    # beyond photos: a voice memo, PDFs (one locked), a note and a (header-only) video clip
    (LIBRARY / "voice-memos").mkdir()
    (LIBRARY / "papers").mkdir()
    make_wav(LIBRARY / "voice-memos" / "memo.wav", 3)
    make_pdf(LIBRARY / "papers" / "letter.pdf", 2, title="A letter")
    make_encrypted_pdf(LIBRARY / "papers" / "bank-statement-locked.pdf")
    make_text(LIBRARY / "papers" / "shopping.md", "# Shopping\n\n- bread\n- olives\n- sun cream\n")
    make_mp4(LIBRARY / "2025-summer" / "waves.mp4", 6)
    (LIBRARY / "README.txt").write_text("A tiny sample library for `./run-demo`. Regenerate: python samples/make_samples.py\n")
    for p in sorted(LIBRARY.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>8}  {p.relative_to(LIBRARY)}")


if __name__ == "__main__":
    main()
