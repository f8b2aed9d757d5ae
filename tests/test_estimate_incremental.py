"""The estimate follows the run's skip-already-done rules: what a rerun would not send is not counted."""
from __future__ import annotations

import json

import pytest

from tests.media_factory import make_jpeg

pytestmark = pytest.mark.usefixtures("prefect_harness")


def estimate_json(capsys, *args) -> dict:
    from enrich.cli import main

    assert main(["estimate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_rerun_estimate_counts_only_new_and_changed_files(tmp_path, gemini, enrich_home, capsys):
    from enrich.flows.enrich_flow import enrich_flow

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(4):
        make_jpeg(lib / f"p{i}.jpg", color=(60 * i, 100, 150))
    assert estimate_json(capsys, str(lib))["items"] == 4
    enrich_flow([str(lib)], {})
    after = estimate_json(capsys, str(lib))
    assert after["items"] == 0 and float(after["cost_usd"]) == 0

    make_jpeg(lib / "new.jpg", color=(10, 200, 10))
    assert estimate_json(capsys, str(lib))["items"] == 1
    assert estimate_json(capsys, str(lib), "--reprocess", "all")["items"] == 5
