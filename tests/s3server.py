"""An S3-compatible server for tests: moto in server mode
(``python -m moto.server``), in its own process on a free port, so the
services under test reach it over HTTP through boto3 exactly as they would
reach MinIO or AWS S3.

What moto does not emulate (docs/storage.md repeats this): durability and
replication (it keeps objects in its process's memory), real network
failures, throttling (503 SlowDown) and S3's limits on request rates; it
accepts any credentials and does not check IAM policies unless told to.
The tests therefore prove the services' protocol (atomic single PUTs,
listings, deletes, missing keys), not the store's own guarantees.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.support import free_port

# moto accepts any credentials; boto3 only needs some, and a region.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> MotoServer:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"moto not answering after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def client(self) -> Any:
        from tagrate_common.objectstore import s3_client

        return s3_client(self.url)

    def new_bucket(self) -> str:
        name = f"tagrate-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the session; each test takes its own bucket
    (:meth:`MotoServer.new_bucket`). Sets the AWS variables boto3 needs, for
    this process and the service processes it starts."""
    saved = {name: os.environ.get(name) for name in S3_ENV}
    os.environ.update(S3_ENV)
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class HoldingProxy:
    """A TCP proxy in front of the S3 server that freezes the first PUT of
    an object whose key contains ``marker``: with ``hold="body"`` after
    passing on the request's headers and half its body (the object is
    mid-upload when the client dies), with ``hold="response"`` after passing
    on the whole request but before the server's answer reaches the client
    (the object is stored; the client never learns it). ``held`` is set once
    frozen; a frozen connection stays open until the client dies."""

    def __init__(self, upstream_port: int, marker: bytes, hold: Literal["body", "response"]) -> None:
        self.upstream_port, self.marker, self.hold = upstream_port, marker, hold
        self.held = threading.Event()
        self._armed = True
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            hold_response = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, hold_response), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, hold_response), daemon=True).start()

    def _claim(self, chunk: bytes) -> bool:
        first_line = chunk.split(b"\r\n", 1)[0]
        with self._lock:
            if self._armed and first_line.startswith(b"PUT ") and self.marker in first_line:
                self._armed = False
                return True
        return False

    def _freeze(self, dead: socket.socket) -> None:
        self.held.set()
        with contextlib.suppress(OSError):
            while dead.recv(65536):  # until the client is gone
                pass

    def _requests(self, client: socket.socket, upstream: socket.socket, hold_response: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                if self._claim(chunk):
                    if self.hold == "response":
                        hold_response.set()
                    else:
                        head, _, body = chunk.partition(b"\r\n\r\n")
                        while not body:  # the body may follow the headers in its own packets
                            body = client.recv(65536)
                        upstream.sendall(head + b"\r\n\r\n" + body[: max(1, len(body) // 2)])
                        self._freeze(client)
                        upstream.close()  # the server sees a torn upload
                        return
                upstream.sendall(chunk)
        with contextlib.suppress(OSError):
            upstream.close()

    def _responses(self, upstream: socket.socket, client: socket.socket, hold_response: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while chunk := upstream.recv(65536):
                if hold_response.is_set():
                    # An interim "100 Continue" (boto3 may ask for one before
                    # sending the body) passes; the final answer does not.
                    while chunk.startswith(b"HTTP/1.1 100 "):
                        interim, _, chunk = chunk.partition(b"\r\n\r\n")
                        client.sendall(interim + b"\r\n\r\n")
                    if chunk:
                        self._freeze(client)
                        return
                    continue
                client.sendall(chunk)
