"""Uploaded files in, one model output per image out: the part of a request
the tagger and the rater's feature extractor share.

A call checks every file's size and header first (cheap, so a bad last file
fails the call before any decoding), then decodes and preprocesses each image
on the calling thread and submits it to one :class:`DynamicBatcher` at once,
so the model already works on the first images of a bulk call while later
ones are still being decoded, and images from concurrent calls share forward
passes. A file that fails to decode fails the call with an error naming it,
and drops the images already queued for it. A call's images queue at the
caller's priority (:data:`~tagrate_common.batcher.call_priority`, set by the
gRPC server from the call's metadata): background work waits behind
interactive calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from ..batcher import DynamicBatcher, InFlight, call_priority
from ..config import ModelServiceSettings
from ..errors import InvalidArgument, PayloadTooLarge
from ..images import ImageLimits, check_header, decode_image, decode_slot, naming_file
from .models import ImageModel

ImageFiles = Sequence[tuple[bytes, str]]  # (data, client file name) per image
# A forward pass: a stacked batch and whether it is alone on the machine
# (see ImageModel.predict) in, one row per image out.
Forward = Callable[[np.ndarray, bool], np.ndarray]


@dataclass(frozen=True)
class PipelineOptions:
    """How an :class:`ImagePipeline` runs: the image limits and the dynamic
    batcher's bounds, plus how the model spreads a batch over a CPU.
    :meth:`from_settings` is the one place a model service's settings turn
    into these."""

    limits: ImageLimits
    max_files: int
    batching: bool = True
    max_batch_size: int = 8
    max_queue_delay_ms: float = 5.0
    max_queue_size: int = 512
    # Passed to ImageModel.use_cpu_streams before the warm-up; None leaves
    # the model as it is (a model shared by several pipelines in tests).
    cpu_streams: int | None = None
    torch_threads: int = 0

    @classmethod
    def from_settings(cls, settings: ModelServiceSettings, device: str) -> PipelineOptions:
        """The options ``settings`` give a model running on ``device`` (the
        batch size and queue delay defaults depend on it)."""
        return cls(
            limits=settings.image_limits,
            max_files=settings.max_bulk_files,
            batching=settings.batching,
            max_batch_size=settings.batch_size_for(device),
            max_queue_delay_ms=settings.queue_delay_ms_for(device),
            max_queue_size=settings.max_queue_size,
            cpu_streams=settings.cpu_streams,
            torch_threads=settings.torch_threads,
        )


class ImagePipeline:
    """Runs ``forward`` for ``model`` over uploaded images through one
    dynamic batcher. ``warm_up(batch sizes)`` runs on the batcher's thread
    before the constructor returns (see :class:`DynamicBatcher`), with the
    sizes the model will see, after the model has been set to spread batches
    over the CPU as ``options`` say."""

    def __init__(
        self,
        model: ImageModel,
        forward: Forward,
        options: PipelineOptions,
        *,
        name: str,
        warm_up: Callable[[tuple[int, ...]], None],
    ) -> None:
        if options.cpu_streams is not None:
            model.use_cpu_streams(options.cpu_streams, options.torch_threads)
        self.model = model
        self.options = options
        self.limits = options.limits
        self.max_files = options.max_files
        self.warm_up_sizes = model.warm_up_sizes(options.max_batch_size if options.batching else 1)
        self._forward = forward
        self._in_flight = InFlight()
        self._batching = options.batching
        self.batcher: DynamicBatcher[np.ndarray, np.ndarray] = DynamicBatcher(
            self.run_batch,
            max_batch_size=options.max_batch_size,
            max_queue_delay_ms=options.max_queue_delay_ms,
            max_queue_size=options.max_queue_size,
            enabled=options.batching,
            name=name,
            initializer=lambda: warm_up(self.warm_up_sizes),
        )

    def run_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """One forward pass over preprocessed images. The batch is alone when
        no other image is on its way (being decoded, or queued behind it).
        Without batching every image is treated as alone: one at a time,
        on every thread, the plain way the unbatched baseline runs."""
        alone = not self._batching or self._in_flight.count <= len(images)
        return self._forward(np.stack(images), alone)

    def check_count(self, files: ImageFiles) -> None:
        """At least one file and no more than the limit."""
        if not files:
            raise InvalidArgument("no images were sent; upload at least one image file", "missing_parameter")
        if len(files) > self.max_files:
            raise PayloadTooLarge(
                f"{len(files)} files were sent; at most {self.max_files} are allowed per request", "too_many_files"
            )

    def check_headers(self, files: ImageFiles) -> None:
        """Every file within the size limit with a supported image header;
        errors name the file by position and name."""
        for index, (data, filename) in enumerate(files, start=1):
            with naming_file(index, filename):
                check_header(data, filename, self.limits)

    def check_files(self, files: ImageFiles) -> None:
        """The cheap checks, before any decoding: :meth:`check_count` and
        :meth:`check_headers`."""
        self.check_count(files)
        self.check_headers(files)

    def run(self, files: ImageFiles, timeout: float | None = None) -> list[np.ndarray]:
        """The forward pass's row for each file, in order (checks included),
        queued at the calling thread's :data:`call_priority`."""
        self.check_files(files)
        priority = call_priority.get()
        futures: list[Future[np.ndarray]] = []
        with self._in_flight.track(len(files)):
            try:
                for index, (data, filename) in enumerate(files, start=1):
                    with naming_file(index, filename):
                        pixels = self._prepare(data, filename)
                    futures.append(self.batcher.submit(pixels, priority))
                return self.batcher.wait(futures, timeout)
            finally:
                for future in futures:  # a later file failed: drop the queued ones
                    future.cancel()

    def _prepare(self, data: bytes, filename: str) -> np.ndarray:
        """One file decoded and preprocessed on the calling thread, in one of
        the process's decode slots (:func:`decode_slot`): no more at once
        than there are cores, since more would only take turns, slowing the
        forward passes they share the cores with, and each holds a full-size
        decoded image. The decoded image is gone when this returns, before
        the next file is decoded."""
        with decode_slot():
            image = decode_image(data, filename, self.limits, self.model.preprocessing.decode_floor)
            try:
                return self.model.preprocess(image)
            finally:
                image.close()

    def close(self) -> None:
        """Finishes queued work and stops the batcher's worker."""
        self.batcher.close()
