"""One budget and one rate limit for a run spread over several worker processes (or machines).

Plain classes, no Dask: the coordinator side (`AllowanceLedger`, `SlotIssuer`) lives in one place (for a Dask
run, a scheduler plugin: flows/dask_runner.py), and the worker side (`LeasedBudget`, `SharedRateLimiter`) is
a drop-in `Budget` / `RateLimiter` for the worker's own Describer that talks to the coordinator through a
`call(op, **kwargs) -> dict` function. Tests plug the two together in one process.

Budget: allowances, granted per chunk attempt (a *lease*). A worker's describer reserves each request's worst
case against its lease; when the lease runs short it asks for a top-up; when the chunk ends it settles: the
real spend is counted and the unused part goes back. The ledger's invariant is
    spent (settled) + outstanding allowances + held (dead leases) <= cap,
and a worker can only spend within its allowances, so the cap holds with any number of workers.

A top-up refused is not the end of a lease's chunk while other leases hold allowance that may come back (real
costs are far below worst cases, and their chunks end): the refusal says whether the request could fit once
the others' allowances returned (`later`). A lease with nothing in flight that is refused first hands back
what it does not use (`checkpoint`: its spend so far is counted, its unreserved allowance released), so a
waiting lease holds nothing another one needs: two waiters can never wait on each other. It then polls.
Only when nothing could come back is the request over budget.

A lease whose worker died is *held*: its requests in flight may still be billed by the provider, and what it
spent before dying was never reported. So a dead lease is never simply released: after `hold_s` (request
timeout + grace: by then no request it sent can still be running) it is charged as spent at its full
allowance (the worst case of what it may have cost; the run summary reports it as `unaccounted_usd`). The
cap therefore holds even when a worker dies with every allowance spent; the price is that a death costs the
run up to one chunk's allowance of headroom.

Rate: one GCRA timeline (enrich/limiter.py) on the coordinator; a worker asks for the next slot (or a few,
`batch`) and waits the delay it is given, so every worker together never exceeds the run's rpm/tpm. A
429 on any worker pauses the shared timeline: every worker's next slot comes after the pause.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from enrich.budget import ZERO, Budget, Reservation
from enrich.limiter import RateLimiter

Call = Callable[..., dict[str, Any]]


@dataclass
class Lease:
    key: str
    worker: str
    allowance: Decimal = ZERO
    dead_since: float | None = None


class AllowanceLedger:
    """The coordinator's budget: grants allowances to leases, settles them, holds the leases of dead workers."""

    def __init__(self, cap: Decimal | str | None, *, hold_s: float, clock: Callable[[], float] = time.monotonic):
        self.cap = None if cap is None else Decimal(str(cap))
        self.hold_s = hold_s
        self._clock = clock
        self._lock = threading.Lock()
        self.spent = ZERO  # settled real spend
        self.unaccounted = ZERO  # dead leases charged at their allowance
        self.leases: dict[str, Lease] = {}
        self.granted_peak = ZERO
        self.refused = 0

    def _outstanding(self) -> Decimal:
        return sum((l.allowance for l in self.leases.values()), ZERO)

    def available(self) -> Decimal | None:
        with self._lock:
            self._expire_locked()
            return None if self.cap is None else self.cap - self.spent - self.unaccounted - self._outstanding()

    def grant(self, key: str, worker: str, need: Decimal | str, want: Decimal | str | None = None) -> Decimal:
        """Add to lease `key` at least `need` and up to `want` (default `need`); 0 when `need` does not fit."""
        return self.request(key, worker, need, want)[0]

    def request(self, key: str, worker: str, need: Decimal | str, want: Decimal | str | None = None
                ) -> tuple[Decimal, bool]:
        """`grant`, and when refused, whether `need` could fit once the other live leases' allowances came back
        (a refused lease may wait for that; otherwise its request is over budget)."""
        need = Decimal(str(need))
        want = max(need, Decimal(str(want))) if want is not None else need
        with self._lock:
            self._expire_locked()
            lease = self.leases.get(key)
            if lease is not None and lease.dead_since is not None:
                return ZERO, False  # a lease of a dead worker gets nothing more
            if self.cap is None:
                amount = want
            else:
                free = self.cap - self.spent - self.unaccounted - self._outstanding()
                if free < need:
                    self.refused += 1
                    return ZERO, self._could_fit_later(key, need)
                amount = min(want, free)
            if lease is None:
                lease = self.leases[key] = Lease(key, worker)
            lease.allowance += amount
            self.granted_peak = max(self.granted_peak, self._outstanding())
            return amount, False

    def _could_fit_later(self, key: str, need: Decimal) -> bool:
        """Whether `need` would fit if every other live lease gave back all it holds. Dead leases' allowances
        never come back (they are charged), and with no other live lease nothing can change by waiting."""
        others = [l for l in self.leases.values() if l.key != key and l.dead_since is None and l.allowance > 0]
        if not others:
            return False
        own = self.leases[key].allowance if key in self.leases else ZERO
        held = sum((l.allowance for l in self.leases.values() if l.dead_since is not None), ZERO)
        return self.cap - self.spent - self.unaccounted - held - own >= need

    def checkpoint(self, key: str, spent: Decimal | str, release: Decimal | str) -> None:
        """A live lease counts `spent` (its spend not yet reported) and hands back `release` of its unused
        allowance, keeping the rest (what its requests in flight reserved)."""
        spent, release = Decimal(str(spent)), Decimal(str(release))
        with self._lock:
            lease = self.leases.get(key)
            if lease is None or lease.dead_since is not None:
                return
            self.spent += spent
            lease.allowance = max(ZERO, lease.allowance - spent - release)

    def settle(self, key: str, spent: Decimal | str) -> None:
        """The lease's chunk ended having spent `spent` (never more than its allowance): count it, release the
        rest. Settling a lease that is unknown (already expired as dead) changes nothing."""
        spent = Decimal(str(spent))
        with self._lock:
            lease = self.leases.pop(key, None)
            if lease is None:
                return
            # a worker can only spend within its allowance; if it reports more, count what it reports
            self.spent += spent

    def worker_lost(self, worker: str) -> list[str]:
        """A worker died: hold its leases (keys returned) until nothing it sent can still be billed."""
        now = self._clock()
        with self._lock:
            held = [l for l in self.leases.values() if l.worker == worker and l.dead_since is None]
            for lease in held:
                lease.dead_since = now
            return [l.key for l in held]

    def expire(self) -> None:
        with self._lock:
            self._expire_locked()

    def _expire_locked(self) -> None:
        now = self._clock()
        for key, lease in list(self.leases.items()):
            if lease.dead_since is not None and now - lease.dead_since >= self.hold_s:
                del self.leases[key]
                self.unaccounted += lease.allowance  # may have been billed in full: never given back

    def snapshot(self) -> dict[str, str | int | None]:
        with self._lock:
            self._expire_locked()
            return {"cap": None if self.cap is None else str(self.cap), "spent": str(self.spent),
                    "unaccounted": str(self.unaccounted), "outstanding": str(self._outstanding()),
                    "granted_peak": str(self.granted_peak), "leases": len(self.leases),
                    "held": sum(1 for l in self.leases.values() if l.dead_since is not None),
                    "refused": self.refused}


class SlotIssuer:
    """The coordinator's rate limit: one shared timeline; `take` returns how long the caller must wait."""

    def __init__(self, rpm: float | None, tpm: float | None, *, clock: Callable[[], float] = time.monotonic):
        self.limiter = RateLimiter(rpm, tpm, clock=clock)
        self._clock = clock
        self.issued = 0

    def take(self, tokens: int = 0, count: int = 1) -> list[float]:
        """`count` consecutive slots (the first carries `tokens`); the delay of each from now, in seconds."""
        self.issued += count
        return [self.limiter._slot(tokens if i == 0 else 0) for i in range(count)]

    def pause(self, seconds: float) -> None:
        self.limiter.pause(seconds)

    def paused_for(self) -> float:
        return max(0.0, self.limiter._paused_until - self._clock())


class Coordinator:
    """Both, behind one `handle(op, **kwargs)` entry point (what a transport exposes), plus a stop flag the
    flow raises (a signal, a fatal error) and every worker sees on its next call."""

    def __init__(self, ledger: AllowanceLedger, slots: SlotIssuer) -> None:
        self.ledger = ledger
        self.slots = slots
        self.stop_reason: str | None = None

    def handle(self, op: str, **kw: Any) -> dict[str, Any]:
        if op == "grant":
            amount, later = self.ledger.request(kw["key"], kw["worker"], kw["need"], kw.get("want"))
            return {"amount": str(amount), "later": later, "stop": self.stop_reason}
        if op == "checkpoint":
            self.ledger.checkpoint(kw["key"], kw["spent"], kw["release"])
            return {"stop": self.stop_reason}
        if op == "settle":
            self.ledger.settle(kw["key"], kw["spent"])
            return {"stop": self.stop_reason}
        if op == "slot":
            return {"delays": self.slots.take(int(kw.get("tokens", 0)), int(kw.get("count", 1))),
                    "stop": self.stop_reason}
        if op == "pause":
            self.slots.pause(float(kw["seconds"]))
            return {"stop": self.stop_reason}
        if op == "stop":
            self.stop_reason = self.stop_reason or kw.get("reason") or "stopped"
            return {"stop": self.stop_reason}
        if op == "snapshot":
            return {**self.ledger.snapshot(), "slots_issued": self.slots.issued, "stop": self.stop_reason}
        raise ValueError(f"unknown coordinator op {op!r}")


# -- the worker side ----------------------------------------------------------------------------------------
class LeasedBudget(Budget):
    """A worker's Budget for one lease: reservations are made against the lease's allowance, which is topped
    up from the coordinator (at least the request's worst case, `quantum` when it can) when it runs short.
    `close()` settles the lease: the real spend is reported, the unused allowance goes back. A refused top-up
    with nothing in flight hands back the unused allowance at once and, when other leases' allowances may come
    back, lets the describer wait (polling every `poll_s`) instead of calling the request over budget."""

    poll_s = 0.25  # a waiter with nothing in flight has no local event to wake it: it asks again this often

    def __init__(self, call: Call, key: str, worker: str, *, quantum: Decimal | str = ZERO,
                 on_stop: Callable[[str], None] | None = None) -> None:
        super().__init__(ZERO)
        self._call = call
        self.key = key
        self.worker = worker
        self.quantum = Decimal(str(quantum))
        self.on_stop = on_stop
        self.closed = False
        self.reported = ZERO  # spend already counted by the coordinator (checkpoints)
        self._later = False  # the last refusal said the request could fit once other leases give back

    def _note(self, answer: dict[str, Any]) -> dict[str, Any]:
        if answer.get("stop") and self.on_stop is not None:
            self.on_stop(answer["stop"])
        return answer

    def try_reserve(self, worst_case: Decimal) -> Reservation | None:
        reservation = super().try_reserve(worst_case)
        if reservation is not None or self.closed:
            return reservation
        with self._lock:
            need = self.spent + self.reserved + worst_case - self.cap
        answer = self._note(self._call("grant", key=self.key, worker=self.worker, need=str(need),
                                       want=str(max(need, self.quantum))))
        amount = Decimal(answer["amount"])
        if amount <= 0:
            self._later = bool(answer.get("later"))
            self._hand_back_if_idle()
            return None
        self._later = False
        with self._lock:
            self.cap += amount
        return super().try_reserve(worst_case)

    def _hand_back_if_idle(self) -> None:
        """With nothing in flight, keep nothing: report the spend so far and release the unused allowance, so
        that while this lease waits it holds nothing another lease needs."""
        with self._lock:
            if self.reserved > 0:
                return
            spent, release = self.spent - self.reported, self.cap - self.spent
            if spent <= 0 and release <= 0:
                return
            self.reported += spent
            self.cap -= release
        self._note(self._call("checkpoint", key=self.key, spent=str(spent), release=str(release)))

    def fits_when_idle(self, worst_case: Decimal) -> bool:
        # Waiting helps when this lease has requests in flight (their settling frees its allowance and the
        # describer tries again, with a top-up), or when the coordinator said other leases' allowances may
        # come back (the describer then polls every `poll_s`).
        with self._lock:
            return self.reserved > 0 or self._later

    def close(self) -> None:
        """Settle the lease (call once every request of the chunk has settled or been released)."""
        if self.closed:
            return
        self.closed = True
        self._note(self._call("settle", key=self.key, spent=str(self.run_spent - self.reported)))


class SharedRateLimiter(RateLimiter):
    """A worker's RateLimiter whose slots come from the coordinator's one timeline; a 429 here pauses it for
    every worker. `batch` slots are fetched per call (fewer round trips at high rates); a slot not used in
    time is wasted, never added (so the shared limit can only be undershot)."""

    def __init__(self, call: Call, *, batch: int = 1, tokens_limited: bool = True,
                 on_stop: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(None, None, clock=clock)
        self.tokens_limited = tokens_limited  # without a tpm limit, token counts need not travel
        self._remote = call
        self.batch = max(1, batch)
        self.on_stop = on_stop
        self._local: list[float] = []  # absolute (local clock) times of slots already granted

    def _slot(self, tokens: int) -> float:
        if not self.tokens_limited:
            tokens = 0
        now = self._clock()
        with self._lock:
            while self._local and self._local[0] < now - 0.5:  # stale: the run was paused or idle meanwhile
                self._local.pop(0)
            if self._local and not tokens:
                return max(0.0, self._local.pop(0) - now)
        answer = self._remote("slot", tokens=tokens, count=1 if tokens else self.batch)
        if answer.get("stop") and self.on_stop is not None:
            self.on_stop(answer["stop"])
        delays = answer["delays"]
        with self._lock:
            self._local.extend(now + d for d in delays[1:])
            self._local.sort()
        return max(0.0, delays[0])

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._local.clear()  # slots granted before the 429 would land inside the pause
            self.pauses += 1
        self._remote("pause", seconds=seconds)
