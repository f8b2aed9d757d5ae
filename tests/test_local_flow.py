"""Local engines through the real flow: mlx-vlm in-process and an OpenAI-compatible server (mlx_vlm.server),
both on the tiny random-weight model the tests build. The text is gibberish, so these tests assert on
structure, token counts, costs and statuses."""
from __future__ import annotations

from decimal import Decimal

import pytest

from tests.media_factory import make_jpeg, make_png
from tests.test_openai_backend import mlx_server, tiny_vlm  # noqa: F401  (fixtures)
from enrich.warehouse.views import connect

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    make_jpeg(root / "a.jpg", size=(320, 240))
    make_png(root / "b.png", size=(200, 300))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return root


def _check_rows(warehouse, model: str):
    con = connect(warehouse)
    rows = con.execute(
        "SELECT path, status, error_kind, backend, model, input_tokens, output_tokens, cost_usd, raw_text, "
        "tokens_per_second FROM items ORDER BY path").fetchall()
    assert len(rows) == 3
    by_name = {r[0].rsplit("/", 1)[1]: r for r in rows}
    assert by_name["broken.jpg"][1] == "error"
    for name in ("a.jpg", "b.png"):
        _, status, kind, backend, got_model, inp, out, cost, raw, tps = by_name[name]
        assert got_model == model
        assert status in {"ok", "error"}, by_name[name]
        if status == "error":  # random weights: invalid JSON, kept for inspection
            assert kind in {"invalid_output", "max_tokens"} and raw is not None
        assert inp > 0 and out > 0
        assert cost == Decimal(0)  # the price table says local models are free
    return by_name


def test_mlx_backend_runs_through_the_flow(photos, tiny_vlm, enrich_home):
    from tests.support.flows import run_enrich_flow

    model = f"mlx:{tiny_vlm}"
    summary = run_enrich_flow([photos], {"model": model, "max_output_tokens": 24})
    assert summary["status"] == "finished" and summary["items"] == 3
    rows = _check_rows(enrich_home / "warehouse", model)
    assert rows["a.jpg"][3] == "mlx"
    assert rows["a.jpg"][9] is not None and rows["a.jpg"][9] > 0  # tokens per second recorded


def test_openai_compatible_server_runs_through_the_flow(photos, mlx_server, tiny_vlm, enrich_home):
    from tests.support.flows import run_enrich_flow

    model = f"openai:{tiny_vlm}@{mlx_server}"
    summary = run_enrich_flow([photos], {"model": model, "max_output_tokens": 24})
    assert summary["status"] == "finished" and summary["items"] == 3
    rows = _check_rows(enrich_home / "warehouse", model)
    assert rows["a.jpg"][3] == "openai"
