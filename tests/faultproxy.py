"""An HTTP proxy between the destination and the real S3 server that injects faults.

It forwards requests unchanged (Host header included, so signatures stay valid)
and, per request, may instead answer 503 SlowDown or 500, reset the connection
before the server saw the request, reset it after the server stored it, add
latency, or hold the request until released. Faults come from an explicit script
or from a seeded random draw, so every run is reproducible, and it counts what it did.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Iterable

import aiohttp
from aiohttp import web

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
FAULTS = ("503", "500", "403", "reset", "reset_after", "delay")
_HOP_HEADERS = {"transfer-encoding", "connection", "keep-alive", "content-length"}


class FaultProxy:
    """Loopback proxy to ``upstream`` with scripted or random faults."""

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.rng = random.Random(seed)
        self.script: deque[str] = deque()
        self.fault_rate = 0.0
        self.random_faults: tuple[str, ...] = ()
        self.max_faults: int | None = None
        self.delay = 0.05
        self.down = False
        self.counts: Counter[str] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress=False: forward gzip/zstd bodies as sent, never decoded in transit.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def fail_next(self, faults: Iterable[str]) -> None:
        """Apply these faults, in order, to the next requests."""
        self.script.extend(faults)

    def fail_randomly(
        self, rate: float, faults: tuple[str, ...], max_faults: int | None = None
    ) -> None:
        """Give each request probability ``rate`` of one of ``faults`` (seeded)."""
        self.fault_rate, self.random_faults, self.max_faults = rate, faults, max_faults

    def hold(self) -> None:
        """Keep requests waiting until :meth:`release`."""
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def until_held(self, timeout: float = 10) -> None:
        """Return once a request waits at the gate (its fault, if any, already chosen)."""
        async with asyncio.timeout(timeout):
            while not self.held:
                await asyncio.sleep(0.01)

    @property
    def faults_injected(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind in FAULTS and kind != "delay")

    def _choose(self) -> str:
        if self.down:
            return "reset"
        if self.script:
            return self.script.popleft()
        if (
            self.random_faults
            and (self.max_faults is None or self.faults_injected < self.max_faults)
            and self.rng.random() < self.fault_rate
        ):
            return self.rng.choice(self.random_faults)
        return "forward"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = self._choose()
        self.counts[action] += 1
        self.counts["requests"] += 1
        if not self.gate.is_set():
            self.held += 1
            await self.gate.wait()
            self.held -= 1
        if action == "503":
            return web.Response(status=503, body=SLOWDOWN, content_type="application/xml")
        if action == "403":
            return web.Response(status=403, body=DENIED, content_type="application/xml")
        if action == "500":
            return web.Response(status=500, body=INTERNAL, content_type="application/xml")
        if action == "reset":
            return self._reset(request)
        if action == "delay":
            await asyncio.sleep(self.delay)
        status, headers, payload = await self._forward(request, body)
        if action == "reset_after":
            return self._reset(request)
        return web.Response(status=status, headers=headers, body=payload)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as response:
            payload = await response.read()
            out = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS}
            if request.method == "HEAD" and "Content-Length" in response.headers:
                out["Content-Length"] = response.headers["Content-Length"]
            self.counts["forwarded"] += 1
            return response.status, out, payload

    @staticmethod
    def _reset(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise ConnectionResetError("connection reset by fault proxy")
