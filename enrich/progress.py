"""Live progress of a run: a rich progress bar on a terminal, plain periodic lines otherwise.

`RunProgress` counts outcomes as rows are produced (thread-safe, constant memory). `ProgressReporter` is a
background thread that samples it (and the describer's request counters) and renders:

- bar  (a TTY): items done/total, ok, failed, spend, requests per minute, ETA, on stderr;
- log  (not a TTY, e.g. under Prefect, cron or CI): one line every `interval_s` seconds and a last one at the
  end, so logs stay readable instead of filling with carriage returns;
- off.

Nothing here imports Prefect; rich is imported only for the bar.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from decimal import Decimal
from typing import Any, Callable, TextIO

from enrich.settings import default

FAILED_STATUSES = ("error",)
RATE_WINDOW_S = 60.0  # requests/min and ETA are taken over the last minute


class RunProgress:
    """Outcome counts of one run. `record()` is called once per row, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total: int | None = None  # files under the roots, once counted
        self.done = 0
        self.by_status: dict[str, int] = {}
        self.spent = Decimal(0)
        self.started = time.monotonic()

    def record(self, row: dict[str, Any]) -> None:
        cost = row.get("cost_usd")
        with self._lock:
            self.done += 1
            status = row.get("status") or "?"
            self.by_status[status] = self.by_status.get(status, 0) + 1
            if cost:
                self.spent += cost

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            by = dict(self.by_status)
            return {"total": self.total, "done": self.done, "by_status": by, "spent": self.spent,
                    "ok": by.get("ok", 0), "failed": sum(by.get(s, 0) for s in FAILED_STATUSES)}


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class _Rates:
    """Items/s and requests/min over the last RATE_WINDOW_S, from periodic samples (bounded memory)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, now: float, done: int, requests: int) -> None:
        self._samples.append((now, done, requests))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()

    def rates(self) -> tuple[float | None, float | None]:
        if len(self._samples) < 2:
            return None, None
        (t0, d0, r0), (t1, d1, r1) = self._samples[0], self._samples[-1]
        if t1 - t0 <= 0:
            return None, None
        return (d1 - d0) / (t1 - t0), (r1 - r0) * 60.0 / (t1 - t0)


class ProgressReporter:
    """Renders a RunProgress until `stop()`. `requests` returns the run's request count so far;
    `notice` returns a one-off message to show (e.g. "stopping...") or None."""

    def __init__(self, progress: RunProgress, mode: str, *, requests: Callable[[], int] = lambda: 0,
                 notice: Callable[[], str | None] = lambda: None, extra: Callable[[], str] = lambda: "",
                 stopping: Callable[[], bool] = lambda: False,
                 interval_s: float = default("progress_interval_s"), stream: TextIO | None = None) -> None:
        self.progress = progress
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if _isatty(self.stream) else "log"
        self.mode = mode
        self._requests = requests
        self._notice = notice
        self._extra = extra
        self._stopping = stopping
        self.interval_s = interval_s
        self._rates = _Rates()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._task = None
        self._last_line = 0.0

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> "ProgressReporter":
        if self.mode == "off":
            return self
        if self.mode == "bar":
            self._start_bar()
        self._thread = threading.Thread(target=self._loop, name="enrich-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        self._tick(final=True)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "ProgressReporter":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _loop(self) -> None:
        period = 0.5 if self.mode == "bar" else min(1.0, self.interval_s)
        while not self._stop.wait(period):
            try:
                self._tick()
            except Exception:  # progress must never take the run down
                pass

    # -- one update -------------------------------------------------------------------------------------
    def _figures(self) -> dict[str, Any]:
        snap = self.progress.snapshot()
        now = time.monotonic()
        requests = self._requests()
        self._rates.add(now, snap["done"], requests)
        items_per_s, rpm = self._rates.rates()
        total = snap["total"]
        eta = None
        if total is not None and items_per_s and not self._stopping():
            eta = max(0, total - snap["done"]) / items_per_s
        return {**snap, "requests": requests, "rpm": rpm, "eta": eta, "elapsed": now - self.progress.started}

    def line(self, f: dict[str, Any] | None = None) -> str:
        f = f or self._figures()
        total = f["total"]
        done = f"{f['done']:,}/{total:,}" if total is not None else f"{f['done']:,}"
        pct = f" ({100 * f['done'] / total:.0f}%)" if total else ""
        rpm = f"{f['rpm']:,.0f} req/min" if f["rpm"] is not None else "- req/min"
        others = {k: v for k, v in f["by_status"].items() if k not in ("ok", "error")}
        other = "".join(f", {k} {v:,}" for k, v in sorted(others.items()))
        eta = f", ETA {_duration(f['eta'])}" if f["eta"] is not None and f["done"] != total else ""
        if self._stopping():
            eta = ", stopping"
        extra = self._extra()
        return (f"enrich: {done} items{pct}: ok {f['ok']:,}, failed {f['failed']:,}{other}; "
                f"${f['spent'].normalize():f} spent; {rpm}{eta}; {_duration(f['elapsed'])} elapsed"
                + (f"; {extra}" if extra else ""))

    def _tick(self, final: bool = False) -> None:
        notice = self._notice()
        if self.mode == "bar" and self._bar is not None:
            if notice:
                from enrich.terminal import safe_text

                self._bar.console.print(safe_text(notice, keep_newlines=True), markup=False, highlight=False)
            self._update_bar(self._figures())
            if final:
                self._bar.refresh()
            return
        if self.mode != "log":
            return
        if notice:
            self._write(f"enrich: {notice}")
        now = time.monotonic()
        if final or now - self._last_line >= self.interval_s:
            self._last_line = now
            self._write(self.line())

    def _write(self, text: str) -> None:
        from enrich.terminal import safe_text

        try:
            self.stream.write(safe_text(text, keep_newlines=True) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    # -- rich ---------------------------------------------------------------------------------------------
    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self.stream, stderr=self.stream is sys.stderr)
        self._bar = Progress(
            TextColumn("[bold]enrich"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ok {task.fields[ok]:,}  failed {task.fields[failed]:,}{task.fields[other]}"),
            TextColumn("${task.fields[spent]}"),
            TextColumn("{task.fields[rpm]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=True,
            refresh_per_second=4,
            redirect_stderr=False,  # we own stderr's console; Prefect's handler writes through its own
        )
        self._task = self._bar.add_task("items", total=None, ok=0, failed=0, other="", spent="0", rpm="- req/min",
                                        eta="-")
        self._bar.start()

    def _update_bar(self, f: dict[str, Any]) -> None:
        others = {k: v for k, v in f["by_status"].items() if k not in ("ok", "error")}
        other = "".join(f"  {k} {v:,}" for k, v in sorted(others.items()))
        self._bar.update(
            self._task, completed=f["done"], total=f["total"], ok=f["ok"], failed=f["failed"], other=other,
            spent=f"{f['spent'].normalize():f}",
            rpm=f"{f['rpm']:,.0f} req/min" if f["rpm"] is not None else "- req/min",
            eta="stopping" if self._stopping() else (_duration(f["eta"]) if f["eta"] is not None else "-"),
        )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
