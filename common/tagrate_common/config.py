"""Settings shared by every service; each service subclasses these in its own
``config.py``. Everything comes from the environment (or a ``.env`` file);
nothing else in the code base reads ``os.environ``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .images import ImageLimits

# The one place the default ports live. The gateway's backend addresses and
# every service's listen port default to these.
DEFAULT_PORTS = {
    "gateway": 8000,
    "tagger": 50051,
    "rater": 50052,
    "dataset": 50053,
    "trainer": 50054,
}
DEFAULT_METRICS_PORTS = {"tagger": 9151, "rater": 9152, "dataset": 9153, "trainer": 9154}

MiB = 1024 * 1024


def _common(default, description: str, name: str, **kw):
    """A setting every process shares: always read from ``TAGRATE_<NAME>``,
    whatever prefix the service's own settings use."""
    return Field(default, validation_alias=f"TAGRATE_{name}", description=description, **kw)


class CommonSettings(BaseSettings):
    """Settings every process reads (``TAGRATE_*``). Subclasses set their own
    ``env_prefix`` for their own fields; keyword arguments use field names."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    data_dir: Path = _common(Path("data"), "Root of all persistent data (one sub-folder per service).", "DATA_DIR")
    log_level: str = _common("INFO", "DEBUG, INFO, WARNING or ERROR.", "LOG_LEVEL")
    log_format: str = _common(
        "text", "`text` for people, `json` for log collectors.", "LOG_FORMAT", pattern="^(text|json)$"
    )
    max_upload_bytes: int = _common(20 * MiB, "Per-file upload limit in bytes.", "MAX_UPLOAD_BYTES", gt=0)
    max_image_pixels: int = _common(
        50_000_000, "Decoded-pixel limit per image (decompression bombs).", "MAX_IMAGE_PIXELS", gt=0
    )
    max_bulk_files: int = _common(256, "Files per bulk request.", "MAX_BULK_FILES", gt=0)
    max_request_bytes: int = _common(
        256 * MiB,
        "Bounds one request's body in bytes (a whole bulk upload: every file plus the form around them); "
        "larger requests are refused with 413 while they arrive.",
        "MAX_REQUEST_BYTES",
        gt=0,
    )
    bulk_chunk_bytes: int = _common(
        32 * MiB,
        "Image bytes per gRPC call when a bulk upload is passed on to a model service (a file larger than "
        "this goes alone); the services' gRPC message limit follows it.",
        "BULK_CHUNK_BYTES",
        gt=0,
    )

    min_free_bytes: int = _common(
        64 * MiB,
        "Free disk space kept in reserve: an upload that would leave less free where the service stores files "
        "is refused with 507 `insufficient_storage` before anything is written, and /readyz reports the low "
        "disk. 0: refuse only when the disk is actually full.",
        "MIN_FREE_BYTES",
        ge=0,
    )

    internal_token: SecretStr | None = _common(
        None,
        "Shared secret every internal gRPC call carries and every service requires (health checks exempt); "
        "unset: internal calls are not checked (make run on loopback). Set it in every deployment.",
        "INTERNAL_TOKEN",
    )
    internal_token_file: Path | None = _common(
        None, "A file holding TAGRATE_INTERNAL_TOKEN (a mounted secret); wins over the variable.", "INTERNAL_TOKEN_FILE"
    )

    def internal_token_value(self) -> str | None:
        """The internal-call secret (the file wins), or None when unset."""
        if self.internal_token_file is not None:
            return self.internal_token_file.read_text(encoding="utf-8").strip() or None
        return self.internal_token.get_secret_value() if self.internal_token is not None else None

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_upload_bytes, self.max_image_pixels)

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: one chunk of a bulk upload (or one file larger
        than a chunk) plus room for framing. Bulk uploads reach the services
        in chunks, never whole, so the limit does not grow with the
        files-per-request limit."""
        return max(self.bulk_chunk_bytes, self.max_upload_bytes) + MiB


class ServiceSettings(CommonSettings):
    """A gRPC service: where it listens and how it shuts down."""

    host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    reuse_port: bool = Field(
        False,
        description="Let several processes listen on the same gRPC port (SO_REUSEPORT; the kernel spreads "
        "connections over them). Off: a port already in use is a start-up error.",
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus HTTP port; 0 disables it.")
    workers: int = Field(16, gt=0, description="gRPC worker threads (concurrent calls).")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="How long SIGTERM waits for in-flight calls.")
    shutdown_notice_seconds: float = Field(
        0.0,
        ge=0,
        description="On SIGTERM, how long to report NOT_SERVING while still serving, so load balancers and "
        "Kubernetes readiness probes stop sending calls before the server stops accepting them.",
    )
    call_timeout_seconds: float = Field(30.0, gt=0, description="Deadline for this service's outgoing calls.")
    reflection: bool = Field(
        False,
        description="Serve gRPC server reflection (grpcurl can list and call every method); for development "
        "(make run turns it on), off in deployments.",
    )
    decode_slots: int = _common(
        0,
        "Full image decodes at once in one process (each holds up to the pixel limit in memory, so this bounds "
        "a service's peak memory); 0: one per CPU this process may use. Set it to the container's CPU limit "
        "where a limit, not the node's cores, is what the process gets.",
        "DECODE_SLOTS",
        ge=0,
        le=256,
    )


class ModelServiceSettings(ServiceSettings):
    """A service that runs an image model behind a dynamic batcher (the
    tagger and the rater's feature extractor)."""

    device: str = Field("auto", description="`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.")
    backend: Literal["auto", "torch", "onnx-fp32", "onnx-int8"] = Field(
        "auto",
        description="What runs an EfficientNet-Lite0 model (the embedded default or a torch-state-dict folder): "
        "`torch`, or onnxruntime in `onnx-fp32` (same outputs, faster on a CPU) or `onnx-int8` (faster still, "
        "close but not equal outputs: a model id of its own). `auto`: onnx-int8 on a CPU with VNNI (AVX-512 VNNI, "
        "AVX-VNNI, AMX), onnx-fp32 on other CPUs, torch on a GPU. The ONNX files are exported on first start into "
        "TAGRATE_MODEL_CACHE_DIR.",
    )
    model_cache_dir: Path | None = _common(
        None,
        "Where the ONNX exports of an EfficientNet-Lite0 model are cached (unset: <data_dir>/models). The "
        "container images set it to the exports they bake in at build time, so a container needs neither "
        "onnx nor scikit-image nor a minute of export at its first start.",
        "MODEL_CACHE_DIR",
    )
    torch_threads: int = Field(
        0, ge=0, description="CPU threads for one forward pass (torch / onnxruntime intra-op); 0: all cores."
    )
    cpu_streams: int = Field(
        0,
        ge=0,
        le=256,
        description="On a CPU, how many images of a batch run at once, each as a single-threaded forward pass "
        "(a lone image gets every thread while no other is in flight). 0: one per torch thread; 1: a batch is "
        "one forward pass over all threads. Torch models only.",
    )
    batching: bool = Field(True, description="Dynamic batching of concurrent requests; off runs images one by one.")
    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Most images in one batch (one forward pass, or one round of CPU streams). Unset: 8 on a CPU "
        "(larger batches only add latency there), 32 on a GPU.",
    )
    max_queue_delay_ms: float | None = Field(
        None,
        ge=0,
        le=10_000,
        description="How long the oldest queued image may wait for a batch to fill. Unset: 0 on a CPU (batches "
        "still form from the images that queue up while a forward pass runs, and a lone request is not "
        "held back), 5 on a GPU.",
    )
    max_queue_size: int = Field(
        512, ge=1, description="Images waiting for the model; beyond this calls get RESOURCE_EXHAUSTED."
    )

    def queue_delay_ms_for(self, device: str) -> float:
        """The configured queue delay, or the default for ``device``."""
        if self.max_queue_delay_ms is not None:
            return self.max_queue_delay_ms
        return 0.0 if device == "cpu" else 5.0

    def batch_size_for(self, device: str) -> int:
        """The configured batch size, or the default for ``device``: a CPU
        gains little from batches beyond a handful of images (activations fall
        out of cache); a GPU needs larger ones to be busy."""
        return self.max_batch_size or (8 if device == "cpu" else 32)
