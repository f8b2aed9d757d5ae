"""A fleet of OpenAI-compatible servers serving one model: `openai:<model>@<url1>,<url2>,...`.

Requests spread over the servers, at most `per_server` in flight on each (a local GPU server is fastest with a
few requests at once, not dozens), to the least busy healthy one. A server that fails a request with a
transport error, a timeout or a 5xx is marked down for `down_s`, and that request goes straight to another
server (it costs the item no attempt); after `down_s` the server gets requests again (the next one is its
health check). `preflight` probes every server and needs at least one up. When every server is down the
request fails like a single server's would (retryable: the describer's backoff and its endpoint-down stop
apply).
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field

from enrich.backends.base import DescribeRequest, DescribeResult
from enrich.backends.openai_compat import OpenAICompatBackend
from enrich.errors import FatalRunError, RetryableError
from enrich.schemas.vocab import ErrorKind


@dataclass
class Server:
    backend: OpenAICompatBackend
    in_flight: int = 0
    down_until: float = 0.0
    failures: int = 0
    served: int = 0
    peak_in_flight: int = 0
    last_error: str = field(default="")


class OpenAIFleetBackend:
    name = "openai"

    def __init__(self, model: str, base_urls: list[str], *, per_server: int = 4, down_s: float = 10.0,
                 clock=time.monotonic, **kwargs) -> None:
        if not base_urls:
            raise ValueError("at least one server URL is needed")
        self.servers = [Server(OpenAICompatBackend(model=model, base_url=u, default_concurrency=per_server,
                                                   **kwargs)) for u in base_urls]
        self.server_model = model
        self.model = f"openai:{model}@{','.join(s.backend.base_url for s in self.servers)}"
        self.per_server = per_server
        self.down_s = down_s
        self._clock = clock
        self.capabilities = dataclasses.replace(self.servers[0].backend.capabilities,
                                                default_concurrency=per_server * len(self.servers))
        self._changed: asyncio.Condition | None = None

    def __repr__(self) -> str:
        return f"OpenAIFleetBackend(model={self.server_model!r}, servers={[s.backend.base_url for s in self.servers]})"

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def healthy(self) -> list[Server]:
        now = self._clock()
        return [s for s in self.servers if s.down_until <= now]

    async def _take(self, tried: set[int]) -> Server | None:
        """The least busy healthy server not yet tried for this request; waits for a free slot; None when no
        healthy untried server is left."""
        cond = self._cond()
        async with cond:
            while True:
                candidates = [s for s in self.healthy() if id(s) not in tried]
                if not candidates:
                    return None
                free = [s for s in candidates if s.in_flight < self.per_server]
                if free:
                    server = min(free, key=lambda s: s.in_flight)
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                    return server
                try:
                    await asyncio.wait_for(cond.wait(), timeout=0.5)  # health may change with time alone
                except asyncio.TimeoutError:
                    pass

    async def _give_back(self, server: Server) -> None:
        cond = self._cond()
        async with cond:
            server.in_flight -= 1
            cond.notify_all()

    async def preflight(self) -> None:
        errors = []
        for server in self.servers:
            try:
                await server.backend.preflight()
            except FatalRunError as exc:
                server.down_until = self._clock() + self.down_s
                server.last_error = str(exc)
                errors.append(str(exc))
        if len(errors) == len(self.servers):
            raise FatalRunError("no server of the fleet answers: " + "; ".join(errors), kind=ErrorKind.ENDPOINT_DOWN)

    async def describe(self, request: DescribeRequest) -> DescribeResult:
        tried: set[int] = set()
        last: RetryableError | None = None
        while True:
            server = await self._take(tried)
            if server is None:
                raise last or RetryableError("every server of the fleet is down", kind=ErrorKind.CONNECTION)
            tried.add(id(server))
            try:
                result = await server.backend.describe(request)
            except RetryableError as exc:
                if exc.kind == ErrorKind.RATE_LIMITED:
                    raise  # the server is up and busy: the describer backs off
                server.failures += 1
                server.last_error = str(exc)
                server.down_until = self._clock() + self.down_s  # down: the next request goes elsewhere
                last = exc
                continue
            finally:
                await self._give_back(server)
            server.served += 1
            return result

    async def aclose(self) -> None:
        for server in self.servers:
            await server.backend.aclose()
