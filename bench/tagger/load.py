"""The tagger benchmark's load: each service path swept over the
concurrencies, and the interleaved rounds the targets are judged on."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio

from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc

from ..harness import KeepAlivePool, Stats, measure
from ..harness.tagger_stack import Process, Stack
from .plan import BULK_IMAGES, CONCURRENCIES, MULTIPART_HEADERS, TAGGER_CPU_BATCH, multipart
from .raw import RawModel, RawResult


@dataclass
class PathResult:
    path: str
    batching: bool
    images_per_call: int
    by_concurrency: dict[int, Stats] = field(default_factory=dict)
    # CPU milliseconds per image, by concurrency, for each process taking part.
    cpu_ms: dict[int, dict[str, float]] = field(default_factory=dict)

    def images_per_second(self, concurrency: int) -> float:
        return self.by_concurrency[concurrency].per_second * self.images_per_call


async def sweep(
    path: str,
    batching: bool,
    images_per_call: int,
    call: Callable[[int], Awaitable[object]],
    seconds: float,
    first_guess: float,
    processes: dict[str, Process],
) -> PathResult:
    """``call`` at every concurrency, each for about ``seconds``: the number
    of calls comes from the rate the previous concurrency reached. Records
    the CPU time each process (and this load generator) spent per image."""
    result = PathResult(path, batching, images_per_call)
    rate = first_guess  # calls per second
    for concurrency in CONCURRENCIES:
        # Every worker makes a few calls; bulk calls are long, so one each is enough.
        least = concurrency * (3 if images_per_call == 1 else 1)
        calls = max(least, round(rate * seconds))
        warmup = min(5, concurrency + 2)
        before = {name: p.cpu_seconds() for name, p in processes.items()}
        client_before = time.process_time()
        stats = await measure(call, calls, concurrency, warmup=warmup)
        images = (calls + warmup) * images_per_call
        cpu = {name: (p.cpu_seconds() - before[name]) for name, p in processes.items()}
        cpu["load generator"] = time.process_time() - client_before
        result.cpu_ms[concurrency] = {name: seconds * 1000 / images for name, seconds in cpu.items()}
        if stats.errors:
            print(f"  {path} at concurrency {concurrency}: {stats.errors} of {calls} calls failed", flush=True)
        result.by_concurrency[concurrency] = stats
        rate = max(stats.per_second, 1.0)
    return result


class Clients:
    """Load for one stack: one image per gRPC call to the tagger, one per
    /tag request, and BULK_IMAGES per /tagbulk request. Request bodies are
    built once (encoding them per call would cost the load generator CPU the
    services share on a small machine), and HTTP goes through a minimal
    keep-alive client (httpx costs several ms of CPU per request)."""

    def __init__(self, stack: Stack, photos: list[tuple[str, bytes]]) -> None:
        self.stack = stack
        self._channel = grpc.aio.insecure_channel(
            stack.tagger_addr, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        self._stub = tagger_pb2_grpc.TaggerServiceStub(self._channel)
        self._requests = [tagger_pb2.TagRequest(images=[common_pb2.ImageFile(data=d, filename=n)]) for n, d in photos]
        self._single = [multipart([("image", photo)]) for photo in photos]
        self._bulk = [
            multipart([("images", photos[(i + k) % len(photos)]) for k in range(BULK_IMAGES)])
            for i in range(len(photos))
        ]
        host, port = stack.gateway_url.removeprefix("http://").rsplit(":", 1)
        self._http = KeepAlivePool(host, int(port))

    async def grpc_tag(self, i: int) -> None:
        await self._stub.Tag(self._requests[i % len(self._requests)], timeout=60)

    async def _post(self, target: str, body: bytes) -> None:
        status, content = await self._http.request("POST", target, body, MULTIPART_HEADERS)
        if status != 200:
            raise RuntimeError(f"{target} answered {status}: {content[:200]!r}")

    async def tag(self, i: int) -> None:
        await self._post("/tag", self._single[i % len(self._single)])

    async def tag_bulk(self, i: int) -> None:
        await self._post("/tagbulk", self._bulk[i % len(self._bulk)])

    async def close(self) -> None:
        await self._channel.close()
        await self._http.close()


async def bench_stack(clients: Clients, batching: bool, seconds: float, raw_rate: float) -> list[PathResult]:
    """Every path of one stack at every concurrency."""
    stack = clients.stack
    direct = {"tagger": stack.tagger}
    both = {"tagger": stack.tagger, "gateway": stack.gateway}
    return [
        await sweep("tagger gRPC", batching, 1, clients.grpc_tag, seconds, raw_rate, direct),
        await sweep("gateway /tag", batching, 1, clients.tag, seconds, raw_rate, both),
        await sweep("gateway /tagbulk", batching, BULK_IMAGES, clients.tag_bulk, seconds, raw_rate / BULK_IMAGES, both),
    ]


@dataclass(frozen=True)
class Round:
    """One round of the targets' measurements, taken back to back so that
    the machine's speed (which drifts by 2x over minutes on a shared VM)
    is the same for every number in it."""

    ceiling: float  # images/s, the best raw configuration
    forward_ms: float  # one raw forward pass, batch 1
    tag16: float  # images/s through the gateway, batching on, concurrency 16
    bulk16: float
    unbatched16: float | None  # the tagger over gRPC with batching off
    tag1_p50_ms: float  # /tag at concurrency 1, batching on


async def target_rounds(
    raw: RawModel,
    best: list[RawResult],
    single: RawResult,
    on: Clients,
    off: Clients | None,
    rounds: int,
    seconds: float,
) -> list[Round]:
    """The issue's target measurements, interleaved: each round measures the
    raw model (the best configurations of the sweep, and one forward pass)
    and then each service path for about ``seconds``."""
    results = []
    for index in range(1, rounds + 1):
        ceiling = max(
            (raw.measure(r.threads, r.streams, r.batch_size, seconds / 2) for r in best),
            key=lambda r: r.images_per_second,
        )
        forward = raw.measure(single.threads, single.streams, 1, seconds / 2)
        rate = ceiling.images_per_second
        tag16 = await measure(on.tag, max(48, round(rate * seconds)), 16, warmup=4)
        bulk16 = await measure(on.tag_bulk, max(16, round(rate * seconds / BULK_IMAGES)), 16, warmup=1)
        unbatched = await measure(off.grpc_tag, max(48, round(rate * seconds / 2)), 16, warmup=4) if off else None
        tag1 = await measure(on.tag, max(20, round(seconds * 1000 / forward.ms_per_batch / 2)), 1, warmup=2)
        for name, stats in (("/tag c=16", tag16), ("/tagbulk c=16", bulk16), ("/tag c=1", tag1)):
            if stats.errors:
                print(f"  round {index}, {name}: {stats.errors} of {stats.calls} calls failed", flush=True)
        result = Round(
            ceiling.images_per_second,
            forward.ms_per_batch,
            tag16.per_second,
            bulk16.per_second * BULK_IMAGES,
            unbatched.per_second if unbatched else None,
            tag1.p50_ms,
        )
        print(
            f"  round {index}: ceiling {result.ceiling:.1f} images/s, /tag c=16 {result.tag16:.1f}, "
            f"/tag c=1 p50 {result.tag1_p50_ms:.1f} ms vs forward {result.forward_ms:.1f} ms",
            flush=True,
        )
        results.append(result)
    return results


OUTSIDE_PATHS = ("tagger gRPC", "gateway /tag", "gateway /tagbulk")


async def outside_rounds(
    raw: RawModel, clients: Clients, threads: int, streams: int, rounds: int, seconds: float
) -> dict[str, list[float]]:
    """CPU ms per image outside the forward pass at concurrency 16, per path
    and round: the services' CPU per image less the in-process forward CPU
    per image at the tagger's batch size and streams, the forward pass
    measured in the same round, just before the paths."""
    stack = clients.stack
    calls = {
        "tagger gRPC": (clients.grpc_tag, 1, {"tagger": stack.tagger}),
        "gateway /tag": (clients.tag, 1, {"tagger": stack.tagger, "gateway": stack.gateway}),
        "gateway /tagbulk": (clients.tag_bulk, BULK_IMAGES, {"tagger": stack.tagger, "gateway": stack.gateway}),
    }
    results: dict[str, list[float]] = {path: [] for path in OUTSIDE_PATHS}
    for index in range(1, rounds + 1):
        forward = raw.measure(threads, streams, TAGGER_CPU_BATCH, seconds / 2)
        line = []
        for path, (call, per_call, processes) in calls.items():
            count = max(48 // per_call, round(forward.images_per_second * seconds / per_call))
            await measure(call, 16, 16, warmup=0)  # the path's buffers and connections warm
            before = {name: p.cpu_seconds() for name, p in processes.items()}
            await measure(call, count, 16, warmup=0)
            spent = sum(p.cpu_seconds() - before[name] for name, p in processes.items())
            outside = spent * 1000 / (count * per_call) - forward.cpu_ms_per_image
            results[path].append(outside)
            line.append(f"{path} {outside:.2f}")
        print(f"  round {index}: forward {forward.cpu_ms_per_image:.1f} CPU ms/image; outside: {', '.join(line)}")
    return results
