"""The benchmark harness: run a callable at a given concurrency for a bounded
number of calls, and print results as a table.

Numbers from one machine are noisy, so benchmarks report ratios measured in
the same run (e.g. through the gateway vs direct) next to absolute figures.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    calls: int
    concurrency: int
    seconds: float
    p50_ms: float
    p95_ms: float
    errors: int
    p99_ms: float = float("nan")

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def measure(call: Callable[[int], Awaitable[object]], calls: int, concurrency: int, warmup: int = 5) -> Stats:
    """Runs ``call(i)`` for i in range(calls) with ``concurrency`` workers.
    Exceptions are counted, not raised: a benchmark reports what happened."""
    for i in range(warmup):
        await call(i)
    latencies: list[float] = []
    errors = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, errors
        while next_index < calls:
            i = next_index
            next_index += 1
            start = time.perf_counter()
            try:
                await call(i)
            except Exception:
                errors += 1
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return Stats(
        calls,
        concurrency,
        elapsed,
        _percentile(latencies, 0.5),
        _percentile(latencies, 0.95),
        errors,
        _percentile(latencies, 0.99),
    )


class KeepAliveHttp:
    """HTTP/1.1 requests over one kept-alive connection with next to no
    client work (httpx spends a millisecond or more per request on a small
    machine, which is the client's cost, not the gateway's, and on a shared
    machine it takes CPU from the services being measured). Only for
    responses with a Content-Length, which is every response of the gateway."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, target: str) -> tuple[int, bytes]:
        """The status and body of ``GET target``."""
        return await self.request("GET", target)

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """The status and body of one request; reconnects once when the
        server closed the idle connection."""
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body or method != "GET":
            head += f"Content-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items()) + "\r\n"
        message = head.encode("latin-1") + body
        for attempt in (1, 2):
            if self._streams is None:
                self._streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._streams
            try:
                writer.write(message)
                await writer.drain()
                response = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
                continue
            lines = response.decode("latin-1").split("\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            return int(lines[0].split()[1]), await reader.readexactly(int(fields["content-length"]))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class KeepAlivePool:
    """:class:`KeepAliveHttp` connections shared by concurrent callers: each
    request takes an idle connection (or opens one) and returns it after."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[KeepAliveHttp] = []
        self._all: list[KeepAliveHttp] = []

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self._idle:
            connection = self._idle.pop()
        else:
            connection = KeepAliveHttp(self.host, self.port)
            self._all.append(connection)
        try:
            return await connection.request(method, target, body, headers)
        finally:
            self._idle.append(connection)

    async def close(self) -> None:
        for connection in self._all:
            await connection.close()


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table with a title, columns sized to fit."""

    def fmt(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
