"""The worst bulk request the limits allow, against real processes: a
chunked /tagbulk of ~255 MiB (255 files of 1 MiB, just under
TAGRATE_MAX_REQUEST_BYTES) through ``python -m tagrate_gateway`` to
``python -m tagrate_tagger``. Neither process may hold the upload in memory:
their peak resident memory (VmHWM) grows by a bounded amount that does not
depend on the request's size.

Bounds (documented in docs/limits.md): the gateway keeps at most
REQUEST_MEMORY_BYTES of a request's files in memory (the rest is spooled to
disk) and holds at most bulk_calls_in_flight chunks of bulk_chunk_bytes
while they are sent (each chunk exists a few times over: the bytes read
from the spools, the protobuf message, gRPC's serialized frame). The tagger
holds the chunks it is sent, the same copies, plus its decoded images.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tagrate_gateway.uploads.files import REQUEST_MEMORY_BYTES
from tests.support import ServiceProcess, free_port

MiB = 1024 * 1024
FILES = 255
CHUNK_BYTES = 32 * MiB
CALLS_IN_FLIGHT = 2
# Growth of peak RSS over the process's RSS before the request.
GATEWAY_BOUND = REQUEST_MEMORY_BYTES + 5 * CHUNK_BYTES * CALLS_IN_FLIGHT + 64 * MiB  # 392 MiB
TAGGER_BOUND = 4 * CHUNK_BYTES * CALLS_IN_FLIGHT + 128 * MiB  # 384 MiB


def padded_jpeg(size: int, seed: int) -> bytes:
    """A valid 64x64 JPEG of exactly ``size`` bytes: comment (COM) segments
    after the start-of-image marker carry the padding."""
    img = Image.new("RGB", (64, 64), (seed % 256, (seed * 7) % 256, 90))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    jpeg = buf.getvalue()
    padding = size - len(jpeg)
    segments = []
    while padding > 0:
        payload = min(65533, padding - 4) if padding > 4 else 0
        if payload <= 0:  # too little room left for a segment: widen the previous one
            break
        segments.append(b"\xff\xfe" + (payload + 2).to_bytes(2, "big") + bytes([32]) * payload)
        padding -= payload + 4
    data = jpeg[:2] + b"".join(segments) + jpeg[2:]
    return data + b"\x00" * (size - len(data))  # bytes after EOI are ignored by decoders


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def rss_bytes(pid: int) -> int:
    return vm_kib(pid, "VmRSS") * 1024


def peak_bytes(pid: int) -> int:
    return vm_kib(pid, "VmHWM") * 1024


def reset_peak(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0),
    # so start-up peaks (model loading) do not hide the request's.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, ServiceProcess, str]]:
    tmp = tmp_path_factory.mktemp("bulk-memory")
    tagger_port = free_port()
    common = {
        "TAGRATE_DATA_DIR": str(tmp),
        "TAGRATE_MAX_REQUEST_BYTES": str(256 * MiB),
        "TAGRATE_MAX_BULK_FILES": "256",
        "TAGRATE_BULK_CHUNK_BYTES": str(CHUNK_BYTES),
        "TAGRATE_LOG_LEVEL": "WARNING",
    }
    tagger = ServiceProcess(
        "tagrate_tagger",
        {**common, "TAGGER_PORT": str(tagger_port), "TAGGER_DEVICE": "cpu", "TAGGER_METRICS_PORT": "0"},
        tmp / "tagger.log",
        f"127.0.0.1:{tagger_port}",
    ).start(timeout=120)
    gateway_port = free_port()
    gateway = ServiceProcess(
        "tagrate_gateway",
        {
            **common,
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_TAGGER_ADDR": f"127.0.0.1:{tagger_port}",
            "GATEWAY_DATASET_ADDR": "",
            "GATEWAY_RATER_ADDR": "",
            "GATEWAY_TRAINER_ADDR": "",
            "GATEWAY_SPOOL_DIR": str(tmp),
            "GATEWAY_BULK_CALLS_IN_FLIGHT": str(CALLS_IN_FLIGHT),
        },
        tmp / "gateway.log",
        "",  # no gRPC health: _start_http polls /healthz
    )
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        _start_http(gateway, url)
        yield gateway, tagger, url
    finally:
        if gateway.proc is not None:
            gateway.terminate()
        tagger.terminate()


def _start_http(process: ServiceProcess, url: str) -> None:
    import subprocess
    import sys

    from tests.support import REPO_ROOT

    log = open(process.log_path, "ab")  # noqa: SIM115 - owned by the child
    process.proc = subprocess.Popen(
        [sys.executable, "-m", process.module],
        env={**os.environ, **process.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    deadline = time.monotonic() + 60
    while True:
        assert process.proc.poll() is None, process.log()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, process.log()
        time.sleep(0.1)


def bulk_body(boundary: str, file: bytes, count: int) -> Iterator[bytes]:
    """A multipart body streamed part by part (httpx sends it chunked: no
    Content-Length, so only the bytes read can trip the body limit)."""
    for i in range(count):
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="f{i}.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        yield file
        yield b"\r\n"
    for name, value in (("limit", "3"), ("threshold", "0")):  # three tags per image, whatever their scores
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    yield f"--{boundary}--\r\n".encode()


@pytest.mark.slow
def test_worst_bulk_request_stays_within_the_memory_bounds(stack):
    gateway, tagger, url = stack
    file = padded_jpeg(1 * MiB, seed=1)
    boundary = "memoryboundary"
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    with httpx.Client(base_url=url, timeout=300) as http:
        # Warm both processes up (imports, first gRPC channel, first forward pass).
        warm = http.post("/tagbulk", content=bulk_body(boundary, padded_jpeg(64 * 1024, 2), 2), headers=headers)
        assert warm.status_code == 200, warm.text
        base = {p.proc.pid: rss_bytes(p.proc.pid) for p in (gateway, tagger)}
        for p in (gateway, tagger):
            reset_peak(p.proc.pid)
        start = time.monotonic()
        answer = http.post("/tagbulk", content=bulk_body(boundary, file, FILES), headers=headers)
        elapsed = time.monotonic() - start
    assert answer.status_code == 200, answer.text[:500]
    tags = answer.json()["tags"]
    assert len(tags) == FILES and all(len(t) == 3 for t in tags)
    grown = {p.proc.pid: peak_bytes(p.proc.pid) - base[p.proc.pid] for p in (gateway, tagger)}
    report = (
        f"{FILES} x 1 MiB in {elapsed:.1f} s; gateway RSS {base[gateway.proc.pid] / MiB:.0f} MiB + peak growth "
        f"{grown[gateway.proc.pid] / MiB:.0f} MiB (bound {GATEWAY_BOUND / MiB:.0f}); tagger RSS "
        f"{base[tagger.proc.pid] / MiB:.0f} MiB + {grown[tagger.proc.pid] / MiB:.0f} MiB "
        f"(bound {TAGGER_BOUND / MiB:.0f})"
    )
    print(report)
    assert grown[gateway.proc.pid] < GATEWAY_BOUND, report
    assert grown[tagger.proc.pid] < TAGGER_BOUND, report
