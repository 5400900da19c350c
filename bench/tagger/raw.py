"""The raw model in this process: forward passes on preprocessed images at
each batch size, the ceiling every service path is judged against; and the
ceiling of every backend side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..harness import median
from .plan import BATCH_SIZES


@dataclass(frozen=True)
class RawResult:
    threads: int
    streams: int  # 1: a batch is one forward pass; more: single-threaded passes side by side
    batch_size: int
    images_per_second: float
    ms_per_batch: float
    cpu_ms_per_image: float  # this process's CPU time (all threads) per image


class RawModel:
    """The default model in this process on ``backend`` (loaded as the
    tagger loads it; ONNX files are exported into ``cache_dir``), on
    preprocessed photos: what the model alone can do, per thread count, CPU
    stream count (see ``CpuStreams``) and batch size."""

    def __init__(self, photos: list[tuple[str, bytes]], backend: str, cache_dir: Path) -> None:
        from tagrate_common.images import decode_image
        from tagrate_common.vision.loaders import load_default_model

        self.backend = backend
        self.model = load_default_model("cpu", backend, cache_dir)  # type: ignore[arg-type]
        self.inputs = [self.model.preprocess(decode_image(data, name, _limits())) for name, data in photos]

    def measure(self, threads: int, streams: int, batch_size: int, seconds: float) -> RawResult:
        """Median time of ``model.predict`` over about ``seconds``, and the
        CPU time it took per image."""
        from tagrate_common.vision.torch_threads import use_torch_threads

        use_torch_threads(threads)
        self.model.use_cpu_streams(streams, threads)
        batch = np.stack([self.inputs[i % len(self.inputs)] for i in range(batch_size)])
        self.model.predict(batch)  # a new shape: allocations happen here, not in the timing
        times = []
        start, cpu_start = time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds or len(times) < 3:
            t0 = time.perf_counter()
            self.model.predict(batch)
            times.append(time.perf_counter() - t0)
        cpu_ms = (time.process_time() - cpu_start) * 1000 / (len(times) * batch_size)
        ms = median(times) * 1000
        return RawResult(threads, streams, batch_size, batch_size / (ms / 1000), ms, cpu_ms)

    def sweep(self, threads: list[int], streams: list[int], seconds: float) -> list[RawResult]:
        results = []
        for count in threads:
            for stream_count in sorted({1, *streams}):
                for size in BATCH_SIZES:
                    if size == 1 and stream_count > 1:
                        continue  # a lone image runs as one forward pass whatever the streams
                    results.append(self.measure(count, stream_count, size, seconds / len(BATCH_SIZES)))
        return results

    def close(self) -> None:
        self.model.close()


BACKENDS = ("torch", "onnx-fp32", "onnx-int8")


def backend_ceilings(
    service: RawModel, photos: list[tuple[str, bytes]], cache_dir: Path, threads: int, streams: int, seconds: float
) -> dict[str, tuple[RawResult, RawResult]]:
    """(batch 1, best batch) per backend, at ``threads`` threads and (for
    batches) ``streams`` CPU streams or one, whichever is faster; the
    service's own backend reuses its model."""
    ceilings = {}
    for backend in BACKENDS:
        raw = service if backend == service.backend else RawModel(photos, backend, cache_dir)
        try:
            single = raw.measure(threads, 1, 1, seconds / 4)
            batched = [
                raw.measure(threads, count, size, seconds / 8)
                for count in sorted({1, streams})
                for size in BATCH_SIZES[1:]
            ]
            ceilings[backend] = (single, max(batched, key=lambda r: r.images_per_second))
        finally:
            if raw is not service:
                raw.close()
    return ceilings


def _limits():
    from tagrate_common.images import ImageLimits

    return ImageLimits(20 << 20, 50_000_000)
