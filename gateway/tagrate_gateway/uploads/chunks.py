"""Bulk uploads passed on to a model service in bounded chunks:
:func:`call_in_chunks` reads a bulk upload back one gRPC call's worth at a
time."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tagrate_common.errors import TagrateError, Unavailable
from tagrate_common.protos import common_pb2

from ..config import GatewaySettings
from .files import UploadedFile

# ---- bulk uploads to a model service, in chunks ----------------------------

T = TypeVar("T")
_FILE_NUMBER_RE = re.compile(r"file (\d+)\b")


@dataclass(frozen=True)
class ChunkPlan:
    """How a bulk upload is split into gRPC calls: at most ``max_bytes`` of
    image bytes (a larger file goes alone) and ``max_files`` files per call,
    at most ``in_flight`` calls at once."""

    max_bytes: int
    max_files: int
    in_flight: int

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ChunkPlan:
        return cls(settings.bulk_chunk_bytes, settings.bulk_chunk_files, settings.bulk_calls_in_flight)

    def split(self, files: Sequence[UploadedFile]) -> list[tuple[int, list[UploadedFile]]]:
        """Consecutive groups of ``files`` with the 0-based position of each
        group's first file in the whole upload."""
        groups: list[tuple[int, list[UploadedFile]]] = []
        group: list[UploadedFile] = []
        start = size = 0
        for index, upload in enumerate(files):
            if group and (size + upload.size > self.max_bytes or len(group) >= self.max_files):
                groups.append((start, group))
                group, size = [], 0
            if not group:
                start = index
            group.append(upload)
            size += upload.size
        if group:
            groups.append((start, group))
        return groups


def _renumbered(exc: TagrateError, offset: int) -> TagrateError:
    """A service's error about "file N" of one chunk, as "file N+offset" of
    the whole upload (the words of :func:`tagrate_common.images.naming_file`)."""
    match = _FILE_NUMBER_RE.match(exc.message)
    if offset == 0 or match is None:
        return exc
    message = f"file {int(match.group(1)) + offset}" + exc.message[match.end() :]
    return type(exc)(message, exc.code)


async def _read_chunk(group: Sequence[UploadedFile]) -> list[common_pb2.ImageFile]:
    # A spool on disk is a blocking read; the event loop keeps serving meanwhile.
    return await asyncio.to_thread(lambda: [upload.image_file() for upload in group])


async def call_in_chunks(
    files: Sequence[UploadedFile],
    plan: ChunkPlan,
    call: Callable[[list[common_pb2.ImageFile]], Awaitable[T]],
) -> list[T]:
    """``call`` once per chunk of ``files`` (see :meth:`ChunkPlan.split`),
    each chunk read from its spools only when its call starts, at most
    ``plan.in_flight`` at once; the answers in upload order. The first
    failing chunk (in upload order) fails the whole upload, its error
    naming the file by its position in the whole upload; the calls after
    it are cancelled."""
    limit = asyncio.Semaphore(plan.in_flight)

    async def run(start: int, group: list[UploadedFile]) -> T:
        async with limit:
            try:
                # No name keeps the chunk's bytes alive: once ``call`` has built
                # its request from them they are freed, one copy less in flight.
                return await call(await _read_chunk(group))
            except TagrateError as exc:
                raise _renumbered(exc, start) from None

    tasks = [asyncio.ensure_future(run(start, group)) for start, group in plan.split(files)]
    try:
        return [await task for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def same_model(models: Sequence[str], service: str) -> str:
    """The one model every chunk's answer came from; 503 when the service
    swapped its model between the chunks of one upload (a retry gets one)."""
    if len(set(models)) > 1:
        raise Unavailable(
            f"the {service} service changed its model while this upload was being processed; send it again",
            "model_changed",
        )
    return models[0] if models else ""
