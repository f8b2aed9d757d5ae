"""`openai:MODEL@URL1,URL2`: requests spread over two scripted OpenAI-compatible servers, at most `per_server`
in flight on each; one server killed mid-run: its requests go to the other and every item still succeeds."""
from __future__ import annotations

import asyncio
import threading

from enrich.backends import create_backend
from enrich.backends.openai_fleet import OpenAIFleetBackend
from enrich.settings import load_settings
from tests.test_openai_backend import GOOD, _reply, _request, _Scripted


def _serve(n_answers: int, sleep_s: float) -> _Scripted:
    srv = _Scripted()
    srv.script.extend({"json": _reply(GOOD.model_dump_json()), "sleep": sleep_s} for _ in range(n_answers))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_a_model_spec_with_several_urls_makes_a_fleet():
    backend = create_backend("openai:m@http://127.0.0.1:1/v1,http://127.0.0.1:2/v1", load_settings())
    assert isinstance(backend, OpenAIFleetBackend) and len(backend.servers) == 2
    assert backend.capabilities.default_concurrency == 2 * backend.per_server


def test_requests_spread_over_the_fleet_and_a_killed_server_loses_nothing():
    a, b = _serve(60, 0.05), _serve(60, 0.05)
    fleet = OpenAIFleetBackend("m", [a.base_url, b.base_url], per_server=2, down_s=60)
    killed = []

    async def run() -> list:
        async def one(i: int):
            result = await fleet.describe(_request())
            if i == 8 and not killed:  # mid-run: server b stops answering (connections refused)
                b.shutdown()
                b.server_close()
                killed.append(len(b.requests))
            return result

        await fleet.preflight()
        try:
            return await asyncio.gather(*(one(i) for i in range(30)))
        finally:
            await fleet.aclose()

    results = asyncio.run(run())
    a.shutdown()
    a.server_close()
    assert [r.status for r in results] == ["ok"] * 30, "every request succeeded despite the dead server"
    posts_a = [r for r in a.requests if r["method"] == "POST"]
    posts_b = [r for r in b.requests if r["method"] == "POST"]
    assert posts_b and len(posts_b) <= killed[0], "b served some before it died and none after"
    assert len(posts_a) + len(posts_b) == 30
    sa, sb = fleet.servers
    assert sa.peak_in_flight <= 2 and sb.peak_in_flight <= 2, "at most per_server in flight on each"
    assert sb.failures >= 1 and sb.down_until > 0, "the dead server was marked down"
