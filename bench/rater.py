"""Rater benchmark: what rating for every user costs against rating for one,
Embed throughput under concurrency, and the rater's resident memory.

    python -m bench rater [--users 10,100,1000] [--calls 20]

Setup: a dataset service (SQLite, the largest user count bulk-loaded), the
rater (default extractor, every head in a fresh folder) and the gateway, each
a subprocess as in production, so the rater's RSS is its own. Personal linear
heads are published through the real PublishHead RPC, 10 then 100 then 1,000
users' worth; there is no global head, so ``all`` rates exactly the users
with heads.

Target (issue 4): rating an image for 1,000 users costs at most 1.5x rating
it for one: the backbone dominates, and the stacked heads are one matrix
multiply for everyone.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import httpx
import numpy as np
import torch
from PIL import Image

from bench.harness import Stats, measure, median, print_table
from tagrate_common.protos import common_pb2, rater_pb2, rater_pb2_grpc
from tagrate_common.vision.rating_heads import RatingHead, serialize_weights
from tagrate_dataset.bulk import bulk_load
from tagrate_dataset.db import create_db_engine, migrate
from tagrate_rater.heads import StackedHeads
from tests.support import REPO_ROOT, ServiceProcess, free_port

TARGET_RATIO = 1.5
BULK_IMAGES = 8


def photos(count: int) -> list[bytes]:
    """Distinct photo-sized JPEGs (640x480 crops of scikit-image's samples)."""
    import skimage.data

    sources = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    out = []
    for i in range(count):
        pixels = sources[i % len(sources)]
        image = Image.fromarray(pixels).resize((640, 480)).rotate(7 * i)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def rss_mib(pid: int) -> float:
    """The process's resident set size (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def head_weights(seed: int, dimensions: int) -> bytes:
    rng = np.random.default_rng(seed)
    return serialize_weights(
        {
            "mean": rng.normal(0, 0.1, dimensions),
            "std": rng.uniform(0.5, 1.5, dimensions),
            "weight": rng.normal(0, 0.05, dimensions),
            "bias": np.array(rng.normal()),
        }
    )


class Stack:
    """Dataset service, rater and gateway as subprocesses in a temp folder."""

    def __init__(self, root: Path, users: int) -> None:
        self.root = root
        self.users = [f"user{i:04d}" for i in range(users)]
        db = root / "tagrate.db"
        engine = create_db_engine(f"sqlite:///{db}")
        migrate(engine)
        bulk_load(engine, users=[{"id": i + 1, "name": name} for i, name in enumerate(self.users)])
        engine.dispose()
        common = {"TAGRATE_DATA_DIR": str(root), "TAGRATE_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        self.dataset_addr = f"127.0.0.1:{free_port()}"
        self.dataset = ServiceProcess(
            "tagrate_dataset",
            {
                **common,
                "DATASET_PORT": self.dataset_addr.rsplit(":", 1)[1],
                "DATASET_METRICS_PORT": "0",
                "DATABASE_URL": f"sqlite:///{db}",
            },
            root / "dataset.log",
            self.dataset_addr,
        ).start()
        self.rater_addr = f"127.0.0.1:{free_port()}"
        self.rater_env = {
            **common,
            "RATER_PORT": self.rater_addr.rsplit(":", 1)[1],
            "RATER_METRICS_PORT": "0",
            "RATER_DATASET_ADDR": self.dataset_addr,
            "RATER_HEADS_DIR": str(root / "heads"),
        }
        self.rater = self.start_rater()
        self.gateway_port = free_port()
        env = {
            **common,
            "GATEWAY_PORT": str(self.gateway_port),
            "GATEWAY_DATASET_ADDR": self.dataset_addr,
            "GATEWAY_RATER_ADDR": self.rater_addr,
            "GATEWAY_TAGGER_ADDR": "",
            "GATEWAY_TRAINER_ADDR": "",
        }
        log = open(root / "gateway.log", "ab")  # noqa: SIM115 - owned by the child
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "tagrate_gateway"], env={**os.environ, **env}, stdout=log, stderr=log, cwd=REPO_ROOT
        )
        self._wait_http(f"{self.url}/healthz")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start_rater(self) -> ServiceProcess:
        return ServiceProcess("tagrate_rater", self.rater_env, self.root / "rater.log", self.rater_addr).start(300)

    def restart_rater(self) -> float:
        """Stops and starts the rater; returns how long the start took."""
        self.rater.terminate()
        start = time.perf_counter()
        self.rater = self.start_rater()
        return time.perf_counter() - start

    def _wait_http(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{url} did not answer")

    def stop(self) -> None:
        self.gateway.terminate()
        self.gateway.wait(30)
        self.rater.terminate()
        self.dataset.terminate()


def files(images: list[bytes]) -> list[common_pb2.ImageFile]:
    return [common_pb2.ImageFile(data=data, filename=f"{i}.jpg") for i, data in enumerate(images)]


async def bench_rating(stack: Stack, user_counts: list[int], calls: int, images: list[bytes]) -> list[list[object]]:
    """Per head count: Rate RPC (1 image) and /ratebulk (8 images), one user
    vs all, at concurrency 1; the ratio of median latencies."""
    rows: list[list[object]] = []
    async with (
        grpc.aio.insecure_channel(stack.rater_addr) as channel,
        httpx.AsyncClient(base_url=stack.url, timeout=120) as http,
    ):
        stub = rater_pb2_grpc.RaterServiceStub(channel)
        info = await stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=30)
        # Heads already live (after a restart) are not published again.
        published = len((await stub.ListHeads(rater_pb2.ListHeadsRequest(), timeout=30)).heads)
        for count in user_counts:
            start = time.perf_counter()
            while published < count:
                user = stack.users[published]
                metadata = rater_pb2.HeadMetadata(user=user, kind="linear", extractor_id=info.extractor_id)
                request = rater_pb2.PublishHeadRequest(
                    metadata=metadata, weights=head_weights(published, info.dimensions)
                )
                await stub.PublishHead(request, timeout=30)
                published += 1
            publish_seconds = time.perf_counter() - start
            one_user = stack.users[0]

            def rate(user: str, n: int, expected: int):
                async def call(i: int) -> None:
                    request = rater_pb2.RateRequest(
                        images=files([images[(i + k) % len(images)] for k in range(n)]), user=user
                    )
                    reply = await stub.Rate(request, timeout=120)
                    assert len(reply.users) == expected

                return call

            def rate_bulk(user: str):
                async def call(i: int) -> None:
                    batch = [images[(i + k) % len(images)] for k in range(BULK_IMAGES)]
                    response = await http.post(
                        "/ratebulk",
                        data={"user": user},
                        files=[("images", (f"{k}.jpg", d)) for k, d in enumerate(batch)],
                    )
                    response.raise_for_status()

                return call

            for label, one, everyone, n_calls in [
                ("Rate RPC, 1 image", rate(one_user, 1, 1), rate("all", 1, count), calls),
                (f"/ratebulk, {BULK_IMAGES} images", rate_bulk(one_user), rate_bulk("all"), max(4, calls // 4)),
            ]:
                single: Stats = await measure(one, n_calls, 1, warmup=2)
                alls: Stats = await measure(everyone, n_calls, 1, warmup=2)
                ratio = alls.p50_ms / single.p50_ms
                rows.append(
                    [
                        count,
                        label,
                        single.p50_ms,
                        alls.p50_ms,
                        alls.p95_ms,
                        ratio,
                        "yes" if ratio <= TARGET_RATIO else "NO",
                        single.errors + alls.errors,
                    ]
                )
            print(f"  {count} heads live (publishing took {publish_seconds:.1f}s)", flush=True)
    return rows


async def bench_embed(stack: Stack, images: list[bytes], seconds_per_row: float) -> list[list[object]]:
    rows = []
    async with grpc.aio.insecure_channel(stack.rater_addr) as channel:
        stub = rater_pb2_grpc.RaterServiceStub(channel)

        async def call(i: int) -> None:
            await stub.Embed(rater_pb2.EmbedRequest(images=files([images[i % len(images)]])), timeout=120)

        probe = await measure(call, 8, 1, warmup=2)
        per_image = probe.seconds / 8
        for concurrency in (1, 4, 16):
            calls = max(concurrency * 4, int(seconds_per_row / per_image))
            stats = await measure(call, calls, concurrency, warmup=concurrency)
            rows.append([concurrency, calls, stats.per_second, stats.p50_ms, stats.p95_ms, stats.errors])
    return rows


def bench_heads_alone(dimensions: int, counts: list[int]) -> list[list[object]]:
    """The stacked heads without the backbone, in-process: one head vs K
    heads on N feature vectors (median of 50 runs)."""
    rng = np.random.default_rng(0)
    rows = []
    for count in counts:
        heads = [
            RatingHead.from_tensors(
                "linear", {"weight": rng.normal(size=dimensions), "bias": np.array(0.0)}, dimensions
            )
            for _ in range(count)
        ]
        stacked = StackedHeads(heads)
        for n in (1, BULK_IMAGES):
            x = rng.normal(size=(n, dimensions)).astype(np.float32)
            times_one, times_all = [], []
            for _ in range(50):
                start = time.perf_counter()
                heads[0].predict(x)
                times_one.append(time.perf_counter() - start)
                start = time.perf_counter()
                stacked.predict(x)
                times_all.append(time.perf_counter() - start)
            rows.append([count, n, median(times_one) * 1000, median(times_all) * 1000])
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rater", description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="10,100,1000", help="head counts to measure, ascending")
    parser.add_argument("--calls", type=int, default=20, help="calls per Rate measurement")
    parser.add_argument("--embed-seconds", type=float, default=4.0, help="rough length of each Embed row")
    args = parser.parse_args(argv)
    counts = sorted(int(c) for c in args.users.split(","))
    images = photos(16)
    with tempfile.TemporaryDirectory(prefix="tagrate-bench-rater-") as tmp:
        print(f"starting dataset service ({counts[-1]} users), rater and gateway ...", flush=True)
        stack = Stack(Path(tmp), counts[-1])
        try:
            rss = [["started, no heads", rss_mib(stack.rater.proc.pid)]]
            embed_rows = asyncio.run(bench_embed(stack, images, args.embed_seconds))
            rss.append(["after the Embed runs, no heads", rss_mib(stack.rater.proc.pid)])
            rating_rows = asyncio.run(bench_rating(stack, counts, args.calls, images))
            rss.append([f"after publishing {counts[-1]} heads and the rating runs", rss_mib(stack.rater.proc.pid)])
            start_seconds = stack.restart_rater()
            head_files = sum(1 for _ in (Path(tmp) / "heads").rglob("*.head"))
            rss.append(
                [
                    f"restarted: {head_files} head files loaded (start {start_seconds:.1f}s)",
                    rss_mib(stack.rater.proc.pid),
                ]
            )
            asyncio.run(bench_embed(stack, images, args.embed_seconds / 2))
            asyncio.run(bench_rating(stack, counts[-1:], max(4, args.calls // 4), images))
            rss.append(
                [f"restarted, {counts[-1]} heads, after Embed and rating traffic", rss_mib(stack.rater.proc.pid)]
            )
        finally:
            stack.stop()
    device = os.environ.get("RATER_DEVICE", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    print_table(
        f"Embed RPC, 1 image per call, batching on (device {device})",
        ["concurrency", "calls", "images/s", "p50 ms", "p95 ms", "errors"],
        embed_rows,
    )
    print_table(
        f"Rating one user vs all (concurrency 1; target: all <= {TARGET_RATIO}x one user)",
        ["heads", "call", "one user p50 ms", "all p50 ms", "all p95 ms", "all / one", "target met", "errors"],
        rating_rows,
    )
    print_table(
        "Stacked heads alone, in-process (linear, 1280-d)",
        ["heads", "images", "one head ms", "all heads ms"],
        bench_heads_alone(1280, counts),
    )
    print_table("Rater resident memory (VmRSS)", ["state", "MiB"], rss)
    return 0
