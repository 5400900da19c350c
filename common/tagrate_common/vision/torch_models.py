"""The torch-backed models: EfficientNet-Lite0 from a state dict (the
embedded default), TorchScript models, and the CPU streams that run a batch's
images side by side on a CPU."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .efficientnet_lite import EfficientNetLite0, fold_for_inference
from .manifest import Labels, Manifest
from .models import ImageModel
from .torch_threads import configured_threads, use_torch_threads

log = logging.getLogger(__name__)


class CpuStreams:
    """Runs a batch on the CPU as single-threaded forward passes side by
    side, one image each, on a pool of ``streams`` threads. A lone image
    runs on the calling thread, over all of ``threads`` when nothing else
    waits for the CPU (the lowest latency for a single request) and on one
    thread otherwise.

    Why: on a small CPU a second torch thread speeds up one EfficientNet-Lite0
    forward pass by only about 1.2-1.4x (depthwise convolutions and small
    layers split badly across threads), and larger batches are slower per
    image once their activations outgrow the cache; two single-threaded
    passes at once keep both cores fully busy. Measured on a 2-core VM with
    ``python -m bench tagger``: see docs/internals.md, "How the model services use a CPU".

    torch's thread count is per thread (see :mod:`.torch_threads`): each
    pool thread runs on one, the calling thread on ``threads``.
    """

    def __init__(self, streams: int, threads: int) -> None:
        self.streams = streams
        self.threads = threads
        self._pool = ThreadPoolExecutor(
            streams, thread_name_prefix="cpu-stream", initializer=use_torch_threads, initargs=(1,)
        )

    def run(self, forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, alone: bool = True) -> np.ndarray:
        """``forward`` over ``batch``, split into one-image passes when it
        holds more than one image; rows stay in order. A lone image gets
        every thread only when it is ``alone``: with other requests being
        decoded meanwhile, a multi-threaded pass would stall at every
        operator waiting for a thread the OS gave to them, so it runs
        single-threaded and leaves them the other cores."""
        if len(batch) == 1:
            use_torch_threads(self.threads if alone else 1)
            return forward(batch)
        return np.concatenate(list(self._pool.map(forward, np.split(batch, len(batch)))))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _TorchModel(ImageModel):
    module: torch.nn.Module

    def __init__(self, manifest: Manifest, labels: Labels, model_id: str, device: str) -> None:
        super().__init__(manifest, labels, model_id, device)
        self.threads = configured_threads()  # for a forward pass (see loaders.set_torch_threads)
        self.cpu_streams: CpuStreams | None = None

    def use_cpu_streams(self, streams: int, threads: int = 0) -> None:
        """On a CPU, run the images of a batch as ``streams`` single-threaded
        forward passes at once (see :class:`CpuStreams`; 1: one pass over
        the whole batch); lone images use ``threads``. 0 threads: the
        model's own (see :func:`~.loaders.set_torch_threads`); 0 streams: one per
        thread. Does nothing on a GPU, or when the model already runs that
        way (services sharing one model call it each)."""
        threads = threads or self.threads
        streams = streams or threads
        self.threads = threads
        current = self.cpu_streams
        if current is not None and (current.streams, current.threads) == (streams, threads):
            return
        if current is not None:
            current.close()
        self.cpu_streams = CpuStreams(streams, threads) if self.device == "cpu" and streams > 1 else None

    def close(self) -> None:
        if self.cpu_streams is not None:
            self.cpu_streams.close()

    def _run(self, batch: np.ndarray) -> torch.Tensor:
        return self.module(torch.from_numpy(batch).to(self.device))

    def _forward_scores(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._activated(self._run(batch).float()).cpu().numpy()

    def _activated(self, out: torch.Tensor) -> torch.Tensor:
        if self.manifest.activation == "softmax":
            return out.softmax(dim=-1)
        if self.manifest.activation == "sigmoid":
            return out.sigmoid()
        return out

    def _predict(self, batch: np.ndarray, alone: bool) -> np.ndarray:
        return self._forward(self._forward_scores, batch, alone)

    def _forward(self, forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, alone: bool) -> np.ndarray:
        """``forward`` over ``batch``: through the CPU streams when there are
        any, else as one pass on this thread's configured threads."""
        if self.cpu_streams is not None:
            return self.cpu_streams.run(forward, batch, alone)
        use_torch_threads(self.threads)
        return forward(batch)


class _Features(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class _LogitsAndFeatures(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(x)
        return self.model.classify(features), features


def _trace_for_cpu(module: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule | None:
    """``module`` as a frozen TorchScript trace, or None when tracing fails
    (TorchScript is deprecated upstream; the eager module then runs)."""
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            # The deprecation, and tracer notes that padding sizes become
            # constants: inputs are always input_size square.
            warnings.simplefilter("ignore")
            return torch.jit.freeze(torch.jit.trace(module, example).eval())
    except Exception as exc:  # any failure just means no speed-up
        log.warning("running the model eagerly: tracing it failed (%s)", exc)
        return None


class EfficientNetLiteModel(_TorchModel):
    """EfficientNet-Lite0 from a state dict (the embedded default), run with
    its BatchNorms folded into its convolutions.

    On a CPU it runs in channels-last memory layout, whose depthwise
    convolutions are about twice as fast (oneDNN), and as a frozen TorchScript
    trace: the forward pass then runs in C++ and holds the GIL once instead of
    for each of its ~150 operators, so it no longer waits for the request
    threads decoding uploads (on 2 cores: ~15% faster alone, ~40% faster
    beside them). On a GPU it stays NCHW and eager: channels-last is barely
    faster there (H100: ~5% at batch 32) but makes cuDNN spend ~2 s building
    kernels for every new batch shape on every thread, against ~0.1 s for NCHW.
    """

    def __init__(
        self,
        manifest: Manifest,
        labels: Labels,
        model_id: str,
        device: str,
        module: EfficientNetLite0,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(manifest, labels, model_id, device)
        self.channels_last = device == "cpu" if channels_last is None else channels_last
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.module = fold_for_inference(module.eval()).to(device).to(memory_format=memory_format)
        self._scores: Callable[[torch.Tensor], torch.Tensor] = self.module
        self._features: Callable[[torch.Tensor], torch.Tensor] = self.module.forward_features
        self._both: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = _LogitsAndFeatures(self.module)
        if device == "cpu":
            example = self._input(np.zeros((1, *self.input_shape), np.float32))
            self._scores = _trace_for_cpu(self.module, example) or self._scores
            self._features = _trace_for_cpu(_Features(self.module), example) or self._features
            self._both = _trace_for_cpu(_LogitsAndFeatures(self.module), example) or self._both

    @property
    def features_id(self) -> str | None:
        return f"{self.model_id}:pooled"

    def _input(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _run(self, batch: np.ndarray) -> torch.Tensor:
        return self._scores(self._input(batch))

    def _forward_features(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._features(self._input(batch)).float().cpu().numpy()

    def forward_features(self, batch: np.ndarray, *, alone: bool = True) -> np.ndarray:
        """Pooled 1280-d features, float32 (N, 1280), for a preprocessed batch
        (padded, and ``alone`` meant, like :meth:`predict`)."""
        return self._forward(self._forward_features, self._padded(batch), alone)[: len(batch)]

    def _forward_both(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities and features side by side in one array (N, labels +
        1280), so CPU streams can split and join it like any other output."""
        with torch.inference_mode():
            logits, features = self._both(self._input(batch))
            scores = self._activated(logits.float())
            return torch.cat([scores, features.float()], dim=1).cpu().numpy()

    def predict_with_features(self, batch: np.ndarray, *, alone: bool = True) -> tuple[np.ndarray, np.ndarray]:
        both = self._forward(self._forward_both, self._padded(batch), alone)[: len(batch)]
        return both[:, : self.label_count], both[:, self.label_count :]


class TorchScriptModel(_TorchModel):
    def __init__(self, manifest: Manifest, labels: Labels, model_id: str, device: str, module: torch.nn.Module):
        super().__init__(manifest, labels, model_id, device)
        self.module = module.eval()
