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
