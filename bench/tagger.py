"""Tagging throughput and latency: ``python -m bench tagger [--seconds S]``.

Images per second at several concurrencies for
- the raw model in this process (forward passes on preprocessed images, at
  batch sizes 1, 8, 16 and 32; the best is the ceiling),
- the tagger over gRPC (one image per call),
- /tag (one image per request) and /tagbulk (several per request) through
  the gateway,
with the tagger's dynamic batching on and off. The tagger and the gateway
run as their own processes (``python -m ...``), as deployed, so the
tagger's resident memory is its own; this process only generates load.

Then the issue's targets, as ratios measured in the same run: at
concurrency 16 the gateway path against the raw batched ceiling (>= 80%)
and against the unbatched service (>= 1.5x); at concurrency 1 the /tag
latency against one raw forward pass (within 10% + 5 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
import httpx
import numpy as np
import skimage.data
from PIL import Image

from tagrate_common.grpc_client import Backend
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc

from .harness import Stats, measure, median, print_table

REPO_ROOT = Path(__file__).resolve().parents[1]
CONCURRENCIES = (1, 4, 16, 32)
BATCH_SIZES = (1, 8, 16, 32)
BULK_IMAGES = 8  # images per /tagbulk request
# scikit-image's bundled photographs, uploaded as JPEG files (400-600 px, 40-90 KB).
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def jpeg_photos() -> list[tuple[str, bytes]]:
    files = []
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buf, format="JPEG", quality=92)
        files.append((f"{name}.jpg", buf.getvalue()))
    return files


BOUNDARY = "tagrate-bench-boundary"
MULTIPART_HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(files: list[tuple[str, tuple[str, bytes]]]) -> bytes:
    """A multipart/form-data body with ``(field, (filename, data))`` file parts."""
    parts = []
    for field_name, (filename, data) in files:
        head = (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_torch_threads() -> int:
    """Every core, as the tagger does by default. Measured on 2 cores, one
    thread fewer (leaving a core to decoding and the gateway) was slower:
    batched forward passes gain more from the second thread than the rest
    loses by sharing it."""
    return os.cpu_count() or 1


# -- the raw model -------------------------------------------------------------


@dataclass(frozen=True)
class RawResult:
    threads: int
    batch_size: int
    images_per_second: float
    ms_per_batch: float


def bench_raw(photos: list[tuple[str, bytes]], threads: list[int], seconds: float) -> list[RawResult]:
    """Forward passes on stacked, already preprocessed photos: what the
    model alone can do, per torch thread count and batch size."""
    import torch

    from tagrate_common.images import decode_image
    from tagrate_common.vision.modeldir import load_default_model

    model = load_default_model("cpu")
    limits = _limits()
    inputs = [model.preprocess(decode_image(data, name, limits)) for name, data in photos]
    results = []
    for count in threads:
        torch.set_num_threads(count)
        model.warm_up((1,))
        for size in BATCH_SIZES:
            batch = np.stack([inputs[i % len(inputs)] for i in range(size)])
            model.predict(batch)  # a new shape: allocations happen here, not in the timing
            times = []
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / len(BATCH_SIZES) or len(times) < 3:
                t0 = time.perf_counter()
                model.predict(batch)
                times.append(time.perf_counter() - t0)
            ms = median(times) * 1000
            results.append(RawResult(count, size, size / (ms / 1000), ms))
    return results


def _limits():
    from tagrate_common.images import ImageLimits

    return ImageLimits(20 << 20, 50_000_000)


# -- services as processes ------------------------------------------------------


class Process:
    """``python -m <module>`` with its own environment and log file."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.module = module
        self.log_path = log_dir / f"{module}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )

    def wait_until(self, ready: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def memory_mib(self) -> tuple[float, float]:
        """Resident memory now and at its peak (VmRSS, VmHWM), in MiB."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB
        return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _grpc_serving(target: str) -> bool:
    client = Backend("tagger", target, tagger_pb2_grpc.TaggerServiceStub, 1.0, 1 << 20)
    try:
        return client.health(0.5) == "SERVING"
    finally:
        client.close()


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    tagger: Process
    tagger_addr: str
    gateway: Process
    gateway_url: str

    def stop(self) -> None:
        self.gateway.stop()
        self.tagger.stop()


def start_stack(batching: bool, threads: int, log_dir: Path, queue_delay_ms: float | None = None) -> Stack:
    tagger_port, gateway_port = free_port(), free_port()
    common = {"TAGRATE_LOG_LEVEL": "WARNING", "TAGRATE_DATA_DIR": str(log_dir)}
    tagger = Process(
        "tagrate_tagger",
        {
            **common,
            "TAGGER_HOST": "127.0.0.1",
            "TAGGER_PORT": str(tagger_port),
            "TAGGER_METRICS_PORT": "0",
            "TAGGER_DEVICE": "cpu",
            "TAGGER_TORCH_THREADS": str(threads),
            "TAGGER_BATCHING": "true" if batching else "false",
            **({} if queue_delay_ms is None else {"TAGGER_MAX_QUEUE_DELAY_MS": str(queue_delay_ms)}),
        },
        log_dir,
    )
    tagger_addr = f"127.0.0.1:{tagger_port}"
    try:
        tagger.wait_until(lambda: _grpc_serving(tagger_addr))
        gateway = Process(
            "tagrate_gateway",
            {
                **common,
                "GATEWAY_PORT": str(gateway_port),
                "GATEWAY_TAGGER_ADDR": tagger_addr,
                "GATEWAY_DATASET_ADDR": "",
                "GATEWAY_RATER_ADDR": "",
                "GATEWAY_TRAINER_ADDR": "",
            },
            log_dir,
        )
    except BaseException:
        tagger.stop()
        raise
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        gateway.wait_until(lambda: _http_ok(f"{url}/healthz"))
    except BaseException:
        gateway.stop()
        tagger.stop()
        raise
    return Stack(tagger, tagger_addr, gateway, url)


# -- load ----------------------------------------------------------------------


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


async def bench_stack(
    stack: Stack, batching: bool, photos: list[tuple[str, bytes]], seconds: float, raw_rate: float
) -> list[PathResult]:
    results = []
    channel = grpc.aio.insecure_channel(stack.tagger_addr, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = tagger_pb2_grpc.TaggerServiceStub(channel)
    requests = [tagger_pb2.TagRequest(images=[common_pb2.ImageFile(data=d, filename=n)]) for n, d in photos]

    async def grpc_tag(i: int) -> None:
        await stub.Tag(requests[i % len(requests)], timeout=60)

    direct = {"tagger": stack.tagger}
    results.append(await sweep("tagger gRPC", batching, 1, grpc_tag, seconds, raw_rate, direct))
    await channel.close()

    # Request bodies are built once: encoding multipart per request would
    # cost the load generator CPU time the services share on a small machine.
    single = [multipart([("image", photo)]) for photo in photos]
    bulk = [
        multipart([("images", photos[(i + k) % len(photos)]) for k in range(BULK_IMAGES)]) for i in range(len(photos))
    ]
    limits = httpx.Limits(max_connections=max(CONCURRENCIES), max_keepalive_connections=max(CONCURRENCIES))
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=120, limits=limits) as http:

        async def tag(i: int) -> None:
            response = await http.post("/tag", content=single[i % len(single)], headers=MULTIPART_HEADERS)
            response.raise_for_status()

        async def tag_bulk(i: int) -> None:
            response = await http.post("/tagbulk", content=bulk[i % len(bulk)], headers=MULTIPART_HEADERS)
            response.raise_for_status()

        both = {"tagger": stack.tagger, "gateway": stack.gateway}
        results.append(await sweep("gateway /tag", batching, 1, tag, seconds, raw_rate, both))
        results.append(
            await sweep("gateway /tagbulk", batching, BULK_IMAGES, tag_bulk, seconds, raw_rate / BULK_IMAGES, both)
        )
    return results


# -- report --------------------------------------------------------------------


def report(raw: list[RawResult], services: list[PathResult], memory: dict[bool, tuple[float, float]]) -> None:
    print_table(
        "Raw model in-process (EfficientNet-Lite0, forward pass only, preprocessed input)",
        ["torch threads", "batch", "images/s", "ms/batch"],
        [(r.threads, r.batch_size, r.images_per_second, r.ms_per_batch) for r in raw],
    )
    ceiling = max(raw, key=lambda r: r.images_per_second)
    single = min((r for r in raw if r.batch_size == 1), key=lambda r: r.ms_per_batch)
    print(
        f"ceiling: {ceiling.images_per_second:.1f} images/s (batch {ceiling.batch_size}, {ceiling.threads} threads); "
        f"one forward pass: {single.ms_per_batch:.1f} ms"
    )

    rows = []
    for result in services:
        for concurrency, stats in result.by_concurrency.items():
            rows.append(
                (
                    result.path,
                    "on" if result.batching else "off",
                    concurrency,
                    result.images_per_second(concurrency),
                    stats.p50_ms,
                    stats.p95_ms,
                    stats.errors,
                )
            )
    print_table(
        f"Services (tagger and gateway as processes; /tagbulk sends {BULK_IMAGES} images per request)",
        ["path", "batching", "concurrency", "images/s", "p50 ms", "p95 ms", "errors"],
        rows,
    )
    cores = os.cpu_count() or 1
    cpu_rows = []
    for result in services:
        cost = result.cpu_ms[16]
        total = sum(cost.values())
        cpu_rows.append(
            (
                result.path,
                "on" if result.batching else "off",
                cost.get("tagger", 0.0),
                cost.get("gateway", 0.0),
                cost["load generator"],
                total,
                cores * 1000 / total,
            )
        )
    print_table(
        f"CPU time per image at concurrency 16 (ms; {cores} cores: the last column is what the CPUs allow)",
        ["path", "batching", "tagger", "gateway", "load generator", "total", "images/s at 100% CPU"],
        cpu_rows,
    )
    print_table(
        "Tagger resident memory (MiB, after its runs)",
        ["batching", "VmRSS", "VmHWM (peak)"],
        [("on" if on else "off", *memory[on]) for on in memory],
    )

    def find(path: str, batching: bool) -> PathResult | None:
        return next((r for r in services if r.path == path and r.batching == batching), None)

    targets = []
    unbatched = find("tagger gRPC", False)
    for path in ("gateway /tag", "gateway /tagbulk"):
        batched = find(path, True)
        if batched is None:
            continue
        rate = batched.images_per_second(16)
        share = rate / ceiling.images_per_second
        targets.append((f"{path} c=16 vs raw ceiling", f"{share:.0%}", ">= 80%", "met" if share >= 0.8 else "MISSED"))
        if unbatched is not None:
            gain = rate / unbatched.images_per_second(16)
            targets.append(
                (
                    f"{path} c=16 vs unbatched gRPC service",
                    f"{gain:.2f}x",
                    ">= 1.50x",
                    "met" if gain >= 1.5 else "MISSED",
                )
            )
    tag = find("gateway /tag", True)
    if tag is not None:
        latency = tag.by_concurrency[1].p50_ms
        allowed = single.ms_per_batch * 1.1 + 5
        targets.append(
            (
                "gateway /tag c=1 p50 latency vs one forward pass",
                f"{latency:.1f} ms vs {single.ms_per_batch:.1f} ms",
                f"<= {allowed:.1f} ms",
                "met" if latency <= allowed else "MISSED",
            )
        )
    print_table("Targets (issue 3)", ["measure", "got", "target", ""], targets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tagger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Length of each measurement (default 3).")
    parser.add_argument(
        "--threads",
        type=int,
        default=default_torch_threads(),
        help="torch threads for the tagger (default: every core, as the tagger itself).",
    )
    parser.add_argument(
        "--queue-delay-ms", type=float, default=None, help="The tagger's max queue delay (default: its own)."
    )
    parser.add_argument("--skip-off", action="store_true", help="Skip the runs with batching off.")
    args = parser.parse_args(argv or [])

    photos = jpeg_photos()
    cores = os.cpu_count() or 1
    print(f"{cores} cores; tagger torch threads {args.threads}; {args.seconds:g} s per measurement", flush=True)
    raw = bench_raw(photos, sorted({args.threads, cores}), args.seconds)
    raw_rate = max(r.images_per_second for r in raw if r.batch_size == 1)

    services: list[PathResult] = []
    memory: dict[bool, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="tagrate-bench-") as tmp:
        for batching in (True, False) if not args.skip_off else (True,):
            print(f"batching {'on' if batching else 'off'}: starting tagger and gateway", flush=True)
            stack = start_stack(batching, args.threads, Path(tmp), args.queue_delay_ms)
            try:
                services += asyncio.run(bench_stack(stack, batching, photos, args.seconds, raw_rate))
                memory[batching] = stack.tagger.memory_mib()
            finally:
                stack.stop()
    report(raw, services, memory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
