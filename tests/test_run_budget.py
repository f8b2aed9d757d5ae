"""`enrich run` with budgets: the estimate first, the stop or the question when it exceeds the budget, and
a capped run against the emulator checked against the emulator's own billing."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from enrich.errors import UsageError
from tests.media_factory import make_jpeg, make_png

ROOT = Path(__file__).resolve().parent.parent


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_run_within_budget_is_not_questioned():
    from enrich.commands._common import confirm_spend

    err = io.StringIO()
    confirm_spend(Decimal("0.5"), Decimal("1"), yes=False, stdin=FakeTerminal(""), stderr=err)
    confirm_spend(Decimal("5"), None, yes=False, stdin=FakeTerminal(""), stderr=err)  # no budget at all
    assert err.getvalue() == ""


def test_over_budget_an_interactive_run_asks_and_goes_on_only_when_told():
    from enrich.commands._common import confirm_spend

    err = io.StringIO()
    confirm_spend(Decimal("2"), Decimal("1"), yes=False, stdin=FakeTerminal("y\n"), stderr=err)
    assert "exceeds the budget $1" in err.getvalue() and "[y/N]" in err.getvalue()
    with pytest.raises(UsageError, match="stopped before sending anything"):
        confirm_spend(Decimal("2"), Decimal("1"), yes=False, stdin=FakeTerminal("\n"), stderr=io.StringIO())


def test_over_budget_a_non_interactive_run_stops_unless_yes():
    from enrich.commands._common import confirm_spend

    with pytest.raises(UsageError, match="--yes"):
        confirm_spend(Decimal("2"), Decimal("1"), yes=False, stdin=io.StringIO("y\n"), stderr=io.StringIO())
    err = io.StringIO()
    confirm_spend(Decimal("2"), Decimal("1"), yes=True, stdin=io.StringIO(""), stderr=err)
    assert "going on (--yes)" in err.getvalue()


def test_a_run_whose_estimate_exceeds_the_budget_stops_before_sending_anything(tmp_path, gemini):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        make_jpeg(lib / f"{i}.jpg", size=(64 + i, 48))
    proc = subprocess.run([sys.executable, "-m", "enrich", "run", str(lib), "--budget", "0.0001"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, "ENRICH_HOME": str(tmp_path / "h")})
    assert proc.returncode == 2, proc.stderr
    assert "estimate for gemini-3.1-flash-lite" in proc.stdout and "budget: $0.0001 for this run" in proc.stdout
    assert proc.stderr.startswith("enrich: error: the estimate $") and proc.stderr.count("\n") == 1
    assert "exceeds the budget $0.0001" in proc.stderr and "--yes" in proc.stderr
    assert gemini.stats()["requests"] == 0


def make_library(root: Path, n: int, shade: int = 90) -> list[Path]:
    """n distinct pictures; libraries made with different shades share no content."""
    root.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = root / (f"{i:02d}.jpg" if i % 3 else f"{i:02d}.png")
        color = (40 + 9 * i, 200 - 7 * i, shade)
        (make_jpeg(path, size=(320 + 8 * i, 240), color=color) if i % 3 else
         make_png(path, size=(300, 200 + 5 * i), color=color))
        paths.append(path)
    return paths


def billed_usd(stats: dict, model: str) -> Decimal:
    """What the emulator's own ledger says was spent: its token counts x the dated price."""
    from enrich.pricing import PER_TOKEN, load_prices
    from enrich.settings import load_settings

    price = load_prices(load_settings().config_dir).price(model)
    return (stats["prompt_tokens"] * price.input
            + (stats["candidates_tokens"] + stats["thoughts_tokens"]) * price.output) * PER_TOKEN


def run_cli(capsys, *args: str) -> dict:
    from enrich.cli import main

    rc = main(["run", *args, "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_capped_at_30_percent_of_its_estimate_spends_at_most_that_and_a_second_run_finishes(
        tmp_path, gemini, enrich_home, capsys):
    from enrich.flows.estimate import estimate
    from enrich.settings import load_settings
    from enrich.warehouse.views import connect

    paths = make_library(tmp_path / "lib", 18)
    est = estimate([str(tmp_path / "lib")], load_settings())
    budget = (est.cost_usd * Decimal("0.3")).quantize(Decimal("0.000001"))
    assert est.items == 18 and budget > est.worst_case_usd / est.items  # at least one item can be afforded

    first = run_cli(capsys, str(tmp_path / "lib"), "--budget", str(budget), "--yes")
    assert first["status"] == "finished" and first["estimate"]["items"] == 18
    billed_first = billed_usd(gemini.stats(), first["model"])
    assert 0 < billed_first <= budget
    assert Decimal(first["spent_usd"]) == billed_first
    assert Decimal(first["budget_usd"]) == budget and 0 < Decimal(first["reserved_peak_usd"]) <= budget
    left = first["over_budget"]
    assert left > 0 and first["by_status"] == {"ok": 18 - left, "over_budget": left}

    con = connect(enrich_home / "warehouse")
    over = [p for (p,) in con.execute("SELECT path FROM items WHERE status = 'over_budget' ORDER BY path").fetchall()]
    run_row = con.execute("SELECT budget_usd, spent_usd, reserved_peak_usd, over_budget FROM runs").fetchall()
    assert run_row == [(budget, billed_first, Decimal(first["reserved_peak_usd"]), left)]
    assert len(over) == left

    # A plain rerun with more budget: done files are skipped (incremental runs), the rest are finished.
    second = run_cli(capsys, str(tmp_path / "lib"), "--budget", "1")
    assert second["by_status"] == {"ok": left} and second["over_budget"] == 0
    assert second["unchanged"] == 18 - left and second["estimate"]["items"] == left
    stats = gemini.stats()
    assert stats["billed_requests"] == 18
    assert sorted(stats["billed_by_media_hash"].values()) == [1] * 18  # nothing billed twice
    assert billed_usd(stats, first["model"]) == billed_first + Decimal(second["spent_usd"])
    con = connect(enrich_home / "warehouse")
    assert con.execute("SELECT count(*) FILTER (status = 'ok'), count(*) FROM items").fetchone() == (18, 18)
    assert sorted(p for (p,) in con.execute("SELECT path FROM items").fetchall()) == sorted(map(str, paths))


def test_a_daily_cap_limits_a_run_by_what_was_spent_today(tmp_path, gemini, enrich_home, monkeypatch):
    """The rolling cap counts today's recorded spend: a second run gets only what is left of it."""
    from enrich.flows.estimate import estimate
    from enrich.settings import load_settings
    from tests.support.estimate_library import run_pipeline
    from enrich.warehouse.views import connect

    make_library(tmp_path / "a", 6)
    first = run_pipeline([str(tmp_path / "a")], load_settings())
    spent = first.describer.budget.run_spent
    assert first.stats.by_status == {"ok": 6} and spent > 0
    make_library(tmp_path / "b", 3, shade=160)  # new content: nothing to reuse from library a
    worst = estimate([str(tmp_path / "b")], load_settings()).worst_case_usd / 3  # one item's reservation
    monkeypatch.setenv("ENRICH_DAILY_BUDGET_USD", str(spent + worst / 2))  # less than one more worst case
    second = run_pipeline([str(tmp_path / "b")], load_settings())
    budget = second.describer.budget
    assert budget.already_spent == spent and budget.run_cap == worst / 2
    assert second.stats.by_status == {"over_budget": 3} and budget.run_spent == 0
    con = connect(enrich_home / "warehouse")
    assert con.execute("SELECT budget_usd FROM runs WHERE run_id = ?", [second.run_id]).fetchone()[0] == worst / 2
