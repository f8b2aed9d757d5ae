"""The coordinator side of a distributed run (tasks/coordination.py) as plain objects, no Dask: allowances
never let the run's spend pass its cap, with any number of workers and dead ones; one shared rate timeline."""
from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

from enrich.tasks.coordination import (
    AllowanceLedger, Coordinator, LeasedBudget, SharedRateLimiter, SlotIssuer,
)

D = Decimal


def run_workers(worker, n: int, timeout: float = 30) -> None:
    """`worker(0..n-1)` on n threads at once; fails if any is still running after `timeout` (a deadlock)."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a worker never finished (two leases waiting on each other?)"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_grants_never_exceed_the_cap_and_unused_allowance_comes_back():
    ledger = AllowanceLedger("1.00", hold_s=10)
    assert ledger.grant("a", "w1", "0.30", "0.50") == D("0.50")
    assert ledger.grant("b", "w2", "0.30", "0.60") == D("0.50"), "capped at what is free"
    assert ledger.grant("c", "w3", "0.01") == 0, "nothing left: refused"
    ledger.settle("a", "0.12")  # spent 0.12 of 0.50: 0.38 back
    assert ledger.available() == D("0.38")
    assert ledger.grant("c", "w3", "0.30") == D("0.30")
    ledger.settle("b", "0.50")
    ledger.settle("c", "0.01")
    assert ledger.spent == D("0.63") and ledger.available() == D("0.37")


def test_a_dead_workers_lease_is_held_then_charged_in_full_never_released():
    clock = Clock()
    ledger = AllowanceLedger("1.00", hold_s=30, clock=clock)
    ledger.grant("a", "w1", "0.40")
    ledger.grant("b", "w2", "0.40")
    assert ledger.worker_lost("w1") == ["a"]
    assert ledger.grant("a", "w1", "0.01") == 0, "a dead lease gets nothing more"
    clock.t += 29
    assert ledger.available() == D("0.20"), "held while its requests may still be billed"
    ledger.settle("a", "0")  # a late settle from the dead worker would be... still counted below
    clock.t += 2
    ledger.expire()
    assert ledger.unaccounted == 0 and ledger.spent == 0, "its chunk settled before it expired: counted as reported"
    ledger2 = AllowanceLedger("1.00", hold_s=30, clock=clock)
    ledger2.grant("a", "w1", "0.40")
    ledger2.worker_lost("w1")
    clock.t += 31
    assert ledger2.available() == D("0.60") and ledger2.unaccounted == D("0.40"), "charged at its allowance"
    ledger2.settle("a", "0.10")  # too late: ignored, the worst case is already charged
    assert ledger2.available() == D("0.60")


def test_many_workers_reserving_at_once_never_overrun_the_cap():
    ledger = AllowanceLedger("2.00", hold_s=5)
    coord = Coordinator(ledger, SlotIssuer(None, None))
    lock = threading.Lock()

    def call(op, **kw):
        with lock:  # a transport delivers one message at a time to the coordinator
            return coord.handle(op, **kw)

    real_spend = []

    def worker(n: int) -> None:
        rng = random.Random(n)
        for chunk in range(5):
            budget = LeasedBudget(call, f"w{n}-c{chunk}", f"w{n}", quantum="0.05")
            for _ in range(20):
                worst = D(rng.randint(1, 30)) / 1000
                r = budget.try_reserve(worst)
                if r is None:
                    continue
                actual = worst * D(rng.randint(0, 100)) / 100  # a real cost is never above its worst case
                budget.settle(r, actual)
                with lock:
                    real_spend.append(actual)
            budget.close()

    run_workers(worker, 8)
    assert sum(real_spend) == ledger.spent <= D("2.00")
    assert ledger.refused > 0, "the cap was reached (the test exercised refusals)"
    assert ledger.snapshot()["outstanding"] == "0"


def test_a_worker_budget_tops_up_and_gives_the_rest_back_on_close():
    ledger = AllowanceLedger("1.00", hold_s=5)
    coord = Coordinator(ledger, SlotIssuer(None, None))
    budget = LeasedBudget(coord.handle, "k", "w", quantum="0.25")
    r = budget.try_reserve(D("0.10"))
    assert r is not None and ledger.available() == D("0.75"), "one quantum"
    assert budget.fits_when_idle(D("0.90")) is True, "a request in flight may free room"
    budget.settle(r, D("0.04"))
    assert budget.fits_when_idle(D("0.90")) is False, "nothing in flight: waiting would never end"
    budget.close()
    assert ledger.spent == D("0.04") and ledger.available() == D("0.96")


def test_one_timeline_for_every_worker_and_a_429_pauses_them_all():
    clock = Clock()
    issuer = SlotIssuer(600, None, clock=clock)  # one request every 0.1 s
    coord = Coordinator(AllowanceLedger(None, hold_s=1), issuer)
    workers = [SharedRateLimiter(coord.handle, batch=3, tokens_limited=False, clock=clock) for _ in range(3)]
    waits = [w._slot(0) for w in workers for _ in range(3)]
    # 9 requests from 3 workers (3 round trips): every slot distinct and 0.1 s apart, whoever asked
    assert issuer.issued == 9
    assert sorted(round(w, 6) for w in waits) == [round(0.1 * i, 6) for i in range(9)]
    workers[0].pause(5.0)
    assert workers[1]._slot(0) >= 5.0, "a 429 on one worker holds the others"


def test_stop_reaches_every_worker_through_its_next_call():
    coord = Coordinator(AllowanceLedger("1", hold_s=1), SlotIssuer(None, None))
    seen = []
    budget = LeasedBudget(coord.handle, "k", "w", on_stop=seen.append)
    coord.handle("stop", reason="interrupted by SIGINT")
    budget.try_reserve(D("0.01"))
    assert seen == ["interrupted by SIGINT"]


def test_a_refused_lease_with_nothing_in_flight_hands_back_and_waits_while_others_may_give_back():
    """Budget for three worst cases, two workers: A reserves all of it; B, refused, is told to wait (A's real
    costs will be far below its worst cases) and keeps nothing meanwhile; once A settles, B's request fits.
    Only when nothing can come back is B's request over budget."""
    ledger = AllowanceLedger("0.30", hold_s=5)
    coord = Coordinator(ledger, SlotIssuer(None, None))
    a = LeasedBudget(coord.handle, "a", "w1", quantum="0.05")
    b = LeasedBudget(coord.handle, "b", "w2", quantum="0.05")
    first = b.try_reserve(D("0.02"))  # B spends a little first, then A takes the rest
    b.settle(first, D("0.01"))
    held = [a.try_reserve(D("0.10")) for _ in range(3)]
    assert held[:2] != [None, None] and held[2] is None, "A holds what is left"
    assert b.try_reserve(D("0.10")) is None
    assert b.fits_when_idle(D("0.10")) is True, "A's allowance may come back: wait"
    assert ledger.spent == D("0.01") and ledger.leases["b"].allowance == 0, "B reported its spend, keeps nothing"
    assert b.poll_s and b.poll_s < 1
    for r in held[:2]:
        a.settle(r, D("0.01"))  # real costs: a tenth of the worst case
    a.close()
    r = b.try_reserve(D("0.10"))
    assert r is not None, "room came back"
    b.settle(r, D("0.10"))
    in_flight = b.try_reserve(D("0.10"))  # 0.30 - 0.01 - 0.02 - 0.10 = 0.17 left
    assert in_flight is not None and b.try_reserve(D("0.10")) is None
    assert b.fits_when_idle(D("0.10")) is True, "its own request in flight may free room"
    b.settle(in_flight, D("0.10"))
    assert b.try_reserve(D("0.10")) is None
    assert b.fits_when_idle(D("0.10")) is False, "nothing in flight anywhere: over budget, no waiting"
    b.close()
    assert ledger.spent == D("0.23") and ledger.snapshot()["outstanding"] == "0"


def test_workers_on_a_tight_budget_wait_for_each_other_instead_of_giving_up():
    """Four workers, a budget of about four worst cases, real costs a tenth of them: every request is served
    (32 real costs and the last one's worst case fit in 0.42) and none is called over budget while another lease
    could still give back; the cap holds. Before waiting was possible, the first lease to top up starved the
    others: they called their requests over budget at once."""
    ledger = AllowanceLedger("0.42", hold_s=5)
    coord = Coordinator(ledger, SlotIssuer(None, None))
    lock = threading.Lock()

    def call(op, **kw):
        with lock:
            return coord.handle(op, **kw)

    served, over = [], []

    def worker(n: int) -> None:
        for chunk in range(2):
            budget = LeasedBudget(call, f"w{n}-c{chunk}", f"w{n}", quantum="0.05")
            budget.poll_s = 0.01
            for _ in range(4):
                while (r := budget.try_reserve(D("0.10"))) is None:
                    if not budget.fits_when_idle(D("0.10")):
                        over.append(n)
                        break
                    time.sleep(budget.poll_s)
                if r is None:
                    continue
                time.sleep(0.002)
                budget.settle(r, D("0.01"))
                served.append(n)
            budget.close()

    run_workers(worker, 4)
    assert len(served) == 32 and over == []
    assert ledger.spent == D("0.32") <= ledger.cap and ledger.snapshot()["outstanding"] == "0"
