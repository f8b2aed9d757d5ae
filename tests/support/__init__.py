"""Test helpers shared across test modules.

`tiny_vlm_dir(tmp_path_factory)` builds (once per session, cached in the session's base temp dir) the tiny
random-weight PaliGemma model of `tests.support.tiny_vlm`. Wire it into conftest.py as

    @pytest.fixture(scope="session")
    def tiny_vlm(tmp_path_factory):
        return tiny_vlm_dir(tmp_path_factory)

(tests/test_mlx_backend.py and tests/test_openai_backend.py define that fixture themselves until then;
both resolve to the same directory, so the model is built once.)
"""
from __future__ import annotations

from pathlib import Path

from tests.support.tiny_vlm import ForceTokens, StopAfter, build_tiny_vlm, force_text

__all__ = ["ForceTokens", "StopAfter", "build_tiny_vlm", "force_text", "tiny_vlm_dir"]


def tiny_vlm_dir(tmp_path_factory) -> Path:
    """The tiny model's directory for this test session (built on first use, then reused)."""
    return build_tiny_vlm(Path(tmp_path_factory.getbasetemp()) / "tiny-vlm")
