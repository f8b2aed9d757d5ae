"""Progress: counts as rows arrive; plain lines when not on a terminal, a rich bar when asked."""
import io
from decimal import Decimal

from enrich.progress import ProgressReporter, RunProgress


def rows(status, n, cost="0"):
    return [{"status": status, "cost_usd": Decimal(cost)} for _ in range(n)]


def test_counts_outcomes_and_spend_as_rows_arrive():
    p = RunProgress()
    for row in rows("ok", 3, "0.001") + rows("error", 2) + rows("skipped", 1):
        p.record(row)
    snap = p.snapshot()
    assert (snap["done"], snap["ok"], snap["failed"], snap["spent"]) == (6, 3, 2, Decimal("0.003"))


def test_not_on_a_terminal_it_writes_plain_lines_with_the_figures():
    p = RunProgress()
    p.total = 10
    out = io.StringIO()
    requests = iter(range(0, 1000, 5))
    reporter = ProgressReporter(p, "auto", requests=lambda: next(requests), stream=out, interval_s=0.05,
                                notice=lambda: None)
    assert reporter.mode == "log"
    with reporter:
        for row in rows("ok", 4, "0.0025") + rows("error", 1):
            p.record(row)
    text = out.getvalue()
    last = text.strip().splitlines()[-1]
    assert "\r" not in text and "\x1b" not in text
    assert last.startswith("enrich: 5/10 items (50%): ok 4, failed 1; $0.01 spent;")
    assert "req/min" in last and "elapsed" in last


def test_a_notice_is_shown_once_and_stopping_replaces_the_eta():
    p = RunProgress()
    p.total = 4
    out = io.StringIO()
    told = []

    def notice():
        if not told:
            told.append(1)
            return "interrupted by SIGINT: stopping"
        return None

    with ProgressReporter(p, "log", stream=out, interval_s=0.05, notice=notice, stopping=lambda: True):
        p.record(rows("ok", 1)[0])
    text = out.getvalue()
    assert text.count("interrupted by SIGINT: stopping") == 1
    assert text.strip().splitlines()[-1].endswith("elapsed") and ", stopping;" in text


def test_the_bar_renders_items_spend_and_rate():
    p = RunProgress()
    p.total = 2
    out = io.StringIO()
    with ProgressReporter(p, "bar", stream=out, requests=lambda: 2):
        for row in rows("ok", 2, "0.5"):
            p.record(row)
    text = out.getvalue()
    assert "2/2" in text and "ok 2" in text and "$1" in text


def test_off_writes_nothing():
    out = io.StringIO()
    with ProgressReporter(RunProgress(), "off", stream=out):
        pass
    assert out.getvalue() == ""
