"""Adaptive concurrency (AIMD): halve on a 429 once per wave, recover +1 per round after a quiet period."""
import asyncio

import pytest

from enrich.concurrency import AdaptiveConcurrency


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_429_halves_the_limit_once_per_wave_not_once_per_answer():
    clock = FakeClock()
    c = AdaptiveConcurrency(16, quiet_s=5, clock=clock)

    async def go():
        tickets = [await c.acquire() for _ in range(16)]  # a wave of 16 admitted in epoch 0
        assert c.on_throttled(tickets[0]) is True
        assert c.current == 8
        # the other 15 of the same wave answer 429 too: they were sent before we backed off
        assert not any(c.on_throttled(t) for t in tickets[1:])
        assert c.current == 8 and c.decreases == 1 and c.throttles == 16
        for _ in tickets:
            c.release()
        # a request admitted after the decrease that is throttled again halves again
        t = await c.acquire()
        assert c.on_throttled(t) is True and c.current == 4
        c.release()

    asyncio.run(go())


def test_the_limit_never_drops_below_the_minimum():
    c = AdaptiveConcurrency(4, minimum=1, clock=FakeClock())
    for _ in range(10):
        c.on_throttled(c.epoch)
    assert c.current == 1


def test_recovery_waits_for_a_quiet_period_then_adds_about_one_per_round():
    clock = FakeClock()
    c = AdaptiveConcurrency(8, quiet_s=5, clock=clock)
    c.on_throttled(c.epoch)
    c.on_throttled(c.epoch)
    assert c.current == 2
    clock.now += 4.9
    for _ in range(50):
        c.on_success()
    assert c.current == 2, "no recovery inside the quiet period"
    clock.now += 0.2
    c.on_success()
    c.on_success()
    assert c.current == 2, "+1/limit per success: 2 successes at limit 2 are not quite +1"
    c.on_success()
    assert c.current == 3
    for _ in range(200):
        c.on_success()
    assert c.current == 8 and c.limit == 8, "recovers to the maximum, never beyond"


def test_acquire_blocks_at_the_limit_and_release_wakes_the_next_in_order():
    async def go():
        c = AdaptiveConcurrency(2)
        await c.acquire()
        await c.acquire()
        order = []

        async def waiter(n):
            await c.acquire()
            order.append(n)

        tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
        await asyncio.sleep(0)
        assert order == [] and c.in_use == 2
        c.release()
        await asyncio.sleep(0)
        assert order == [0]
        c.release()
        c.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2] and c.in_use == 2

    asyncio.run(go())


def test_a_lower_limit_admits_nobody_until_enough_slots_are_released():
    async def go():
        c = AdaptiveConcurrency(4)
        tickets = [await c.acquire() for _ in range(4)]
        c.on_throttled(tickets[0])  # limit 2 while 4 are in flight
        got = asyncio.create_task(c.acquire())
        c.release()
        c.release()
        await asyncio.sleep(0)
        assert not got.done(), "2 still in flight at limit 2: no slot yet"
        c.release()
        await asyncio.sleep(0)
        assert got.done()
        got.result()

    asyncio.run(go())


def test_a_cancelled_waiter_does_not_leak_a_slot():
    async def go():
        c = AdaptiveConcurrency(1)
        await c.acquire()
        waiting = asyncio.create_task(c.acquire())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        c.release()
        assert c.in_use == 0
        await asyncio.wait_for(c.acquire(), 1)
        assert c.in_use == 1

    asyncio.run(go())
