import asyncio

from enrich.limiter import RateLimiter


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_requests_are_spaced_evenly_not_bursty():
    clock = FakeClock()
    lim = RateLimiter(rpm=600, burst_s=0.0, clock=clock)  # 10 per second -> 0.1 s apart
    waits = [lim._slot(0) for _ in range(5)]
    assert all(abs(w - 0.1 * i) < 1e-9 for i, w in enumerate(waits)), waits


def test_token_limit_spaces_big_requests():
    clock = FakeClock()
    lim = RateLimiter(rpm=None, tpm=60_000, burst_s=0.0, clock=clock)  # 1000 tokens/s
    assert lim._slot(500) == 0.0
    assert abs(lim._slot(500) - 0.5) < 1e-9


def test_pause_holds_every_request():
    clock = FakeClock()
    lim = RateLimiter(rpm=6000, burst_s=0.0, clock=clock)
    lim.pause(5)
    assert lim._slot(0) >= 5


def test_acquire_waits_in_real_time():
    lim = RateLimiter(rpm=1200, burst_s=0.0)  # 50 ms apart

    async def go():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(4):
            await lim.acquire()
        return loop.time() - t0

    assert asyncio.run(go()) >= 0.14


def test_no_burst_by_default_so_a_sliding_minute_never_sees_more_than_the_limit():
    clock = FakeClock()
    lim = RateLimiter(rpm=120, clock=clock)  # 2 per second
    sent = []
    for _ in range(300):
        wait = lim._slot(0)
        sent.append(clock.now + wait)
    # any 60 s window holds at most 120 requests
    for i in range(len(sent) - 120):
        assert sent[i + 120] - sent[i] >= 60.0 - 1e-9


def test_idle_time_earns_no_burst():
    clock = FakeClock()
    lim = RateLimiter(rpm=600, clock=clock)  # 0.1 s apart
    assert lim._slot(0) == 0.0
    clock.now += 10.0  # idle for 10 s: still only one request now, then the normal spacing
    waits = [lim._slot(0) for _ in range(3)]
    assert [round(w, 9) for w in waits] == [0.0, 0.1, 0.2]


def test_requests_resume_at_normal_spacing_after_a_pause_not_in_a_burst():
    clock = FakeClock()
    lim = RateLimiter(rpm=600, burst_s=5.0, clock=clock)  # even with a burst allowance configured
    lim._slot(0)
    lim.pause(2.0)
    waits = [lim._slot(0) for _ in range(3)]
    assert [round(w, 6) for w in waits] == [2.0, 2.1, 2.2]
    assert lim.pauses == 1


def test_zero_means_no_limit():
    lim = RateLimiter(rpm=0, tpm=0, clock=FakeClock())
    assert all(lim._slot(10_000) == 0.0 for _ in range(100))
