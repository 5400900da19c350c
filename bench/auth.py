"""Gateway overhead of access control: ``python -m bench auth [--calls N] [--ratings N]``.

One dataset service (SQLite, a user with ``--ratings`` ratings) behind two
gateways started the same way: one with access control off, one with it on
(a user token in ``Authorization``, verified by the dataset service once and
then served from the gateway's cache for GATEWAY_AUTH_CACHE_SECONDS, as in
production). /getuserdata?user=U&page=1 (60 items) is sent to both,
interleaved request by request at concurrency 1, so both see the same data
and the same machine. Target (issue 14): p50 with access control on at most
0.5 ms above the p50 with it off. A second figure shows the uncached path
(cache off: every request asks the dataset service).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from tests.gateway.conftest import GatewayServer, gateway_settings
from tests.imagefactory import make_image
from tests.support import dataset_settings

from .harness import median, print_table

TARGET_ADDED_MS = 0.5
USER = "benchuser"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"


def _seed(url: str, ratings: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(ratings):
            data = make_image("PNG", (16, 16), seed=10_000 + i)
            response = http.post(
                "/addrating", data={"user": USER, "rating": "0.5"}, files={"image": (f"{i}.png", data)}
            )
            response.raise_for_status()


def _timed(http: httpx.Client, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    response = http.get("/getuserdata", params={"user": USER, "page": "1"}, headers=headers)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed * 1000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench auth", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="requests per gateway (default 2000)")
    parser.add_argument("--ratings", type=int, default=120, help="ratings of the user (default 120)")
    args = parser.parse_args(argv)

    from tagrate_dataset.server import create_server

    with tempfile.TemporaryDirectory(prefix="tagrate-bench-auth-") as tmp:
        root = Path(tmp)
        dataset = create_server(dataset_settings(root / "data", f"sqlite:///{root / 'tagrate.db'}"))
        addr = f"127.0.0.1:{dataset.start()}"
        gateways: list[GatewayServer] = []
        try:
            common = {"max_upload_bytes": 1 << 20}
            off = GatewayServer(gateway_settings(addr, root / "off", auth="off", **common)).start()
            gateways.append(off)
            on = GatewayServer(
                gateway_settings(addr, root / "on", auth="on", admin_token=ADMIN_TOKEN, **common)
            ).start()
            gateways.append(on)
            uncached = GatewayServer(
                gateway_settings(addr, root / "nc", auth="on", admin_token=ADMIN_TOKEN, auth_cache_seconds=0, **common)
            ).start()
            gateways.append(uncached)
            _seed(off.url, args.ratings)
            with httpx.Client(base_url=on.url, timeout=30) as http:
                made = http.post("/tokens", json={"user": USER}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                made.raise_for_status()
                token = {"Authorization": f"Bearer {made.json()['token']}"}
            times: dict[str, list[float]] = {"off": [], "on": [], "on, no cache": []}
            with (
                httpx.Client(base_url=off.url, timeout=30) as h_off,
                httpx.Client(base_url=on.url, timeout=30) as h_on,
                httpx.Client(base_url=uncached.url, timeout=30) as h_nc,
            ):
                for _ in range(50):  # warm-up: connections, caches, first queries
                    _timed(h_off, {}), _timed(h_on, token), _timed(h_nc, token)
                for i in range(args.calls):
                    pairs = [("off", h_off, {}), ("on", h_on, token)]
                    if i % 2 == 0:
                        pairs.reverse()  # neither side always goes first
                    for name, http, headers in pairs:
                        times[name].append(_timed(http, headers))
                    if i % 4 == 0:
                        times["on, no cache"].append(_timed(h_nc, token))
        finally:
            for gateway in gateways:
                gateway.stop()
            dataset.stop(0)

    p50 = {name: median(values) for name, values in times.items()}
    added = p50["on"] - p50["off"]
    rows = [[name, len(values), f"{p50[name]:.3f}", f"{p50[name] - p50['off']:+.3f}"] for name, values in times.items()]
    print_table(
        "/getuserdata?page=1 (60 items), interleaved", ["access control", "requests", "p50 ms", "added ms"], rows
    )
    verdict = "PASS" if added <= TARGET_ADDED_MS else "FAIL"
    print(
        f"\nadded p50 with access control on (cached token): {added:+.3f} ms; target <= {TARGET_ADDED_MS} ms: {verdict}"
    )
    return 0 if added <= TARGET_ADDED_MS else 1


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
