"""Settings of the dataset service (``DATASET_*``, plus ``DATABASE_URL`` and
the shared ``TAGRATE_*`` ones). Every environment variable the service reads
is declared here."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from tagrate_common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, ServiceSettings
from tagrate_common.objectstore import Backend, ObjectStore, S3Settings


class DatasetSettings(ServiceSettings, S3Settings):
    """Where the dataset service listens and keeps its data.

    Paths left unset are derived from ``data_dir``: the SQLite database at
    ``<data_dir>/dataset/tagrate.db``, blobs under ``<data_dir>/dataset/blobs``
    and resized versions under ``<data_dir>/dataset/cache``.
    """

    model_config = SettingsConfigDict(env_prefix="DATASET_")

    port: int = Field(DEFAULT_PORTS["dataset"], ge=0, le=65535, description="gRPC port (0 picks a free one).")
    metrics_port: int = Field(
        DEFAULT_METRICS_PORTS["dataset"], ge=0, le=65535, description="Prometheus HTTP port; 0 disables it."
    )
    database_url: str = Field(
        "",
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL of the database: `sqlite:///path.db` or `postgresql://user:pass@host/db` "
        "(psycopg 3 is used for PostgreSQL). Empty: SQLite at <data_dir>/dataset/tagrate.db.",
    )
    blob_dir: Path | None = Field(
        None, description="Original image files; derived when unset: <data_dir>/dataset/blobs."
    )
    cache_dir: Path | None = Field(
        None, description="Resized versions (/getimage?size=); derived when unset: <data_dir>/dataset/cache."
    )
    blob_backend: Backend = Field(
        "fs",
        description="Where originals and resized versions are kept: `fs`, the folders blob_dir and cache_dir "
        "(a ReadWriteMany volume when several replicas run); `s3`, the bucket DATASET_S3_BUCKET under "
        "`<DATASET_S3_PREFIX>blobs/` and `cache/` (docs/storage.md).",
    )
    db_pool_size: int = Field(8, gt=0, description="Database connections kept open.")
    db_max_overflow: int = Field(16, ge=0, description="Extra connections opened under load beyond db_pool_size.")
    sqlite_busy_timeout_seconds: float = Field(
        30.0, gt=0, description="How long a SQLite write waits for another writer before failing."
    )
    write_retries: int = Field(
        8,
        gt=0,
        description="Attempts for a write that lost a race on a unique constraint (e.g. the same new user "
        "or image added by two calls at once) before giving up.",
    )
    userdata_default_limit: int = Field(
        60, gt=0, description="GetUserData page size when a page but no limit is given."
    )
    userdata_max_limit: int = Field(1000, gt=0, description="Largest GetUserData page size.")
    tag_members: bool = Field(
        True,
        description="Answer tag filters from tag_members and count them from in-memory bitsets "
        "(docs/tag-filters.md), and search /getsimilar within those bitsets (docs/similar.md); "
        "false reads the source tables, as before (for comparison).",
    )
    max_filter_tags: int = Field(50, gt=0, description="Most tags (include and exclude together) one query may name.")
    max_tag_chars: int = Field(200, gt=0, description="Longest tag name accepted, in characters.")
    album_max_images: int = Field(
        10_000, gt=0, description="Most images one album holds (also the most one request may name)."
    )
    albums_default_limit: int = Field(
        15, gt=0, description="Albums per page when a page is asked for without a limit (the original's 15)."
    )
    albums_max_limit: int = Field(100, gt=0, description="Largest page of albums (each with its images).")
    training_chunk_size: int = Field(512, gt=0, description="StreamTrainingData examples per message by default.")
    max_training_chunk_size: int = Field(4096, gt=0, description="Largest chunk size a caller may ask for.")
    stale_temp_seconds: float = Field(
        600.0,
        ge=0,
        description="On start, unfinished blob/cache temp files older than this are removed (left by a crash; "
        "younger ones may belong to another replica still writing on a shared volume); so are files of images "
        "that have no row (a delete interrupted by a crash, an upload never committed).",
    )
    orphan_sweep_seconds: float = Field(
        60.0,
        ge=0,
        description="Longest the start-up sweep for files of images without a row may take; "
        "what it did not reach waits for the next start.",
    )

    # ---- peers and background work ----
    tagger_addr: str = Field(
        f"127.0.0.1:{DEFAULT_PORTS['tagger']}",
        description='host:port of the tagger service (/updatetags, background tagging); "" means not configured '
        "(new images wait in the work queue, /updatetags answers 503).",
    )
    rater_addr: str = Field(
        f"127.0.0.1:{DEFAULT_PORTS['rater']}",
        description='host:port of the rater service (feature vectors); "" means not configured (new images '
        "wait in the work queue, training data is streamed without the missing vectors).",
    )
    tagger_timeout_seconds: float = Field(60.0, gt=0, description="Deadline for one call to the tagger.")
    rater_timeout_seconds: float = Field(60.0, gt=0, description="Deadline for one call to the rater.")
    tag_batch_size: int = Field(
        16,
        ge=1,
        le=1024,
        description="Images per Tag call (keep it within TAGRATE_MAX_BULK_FILES and the bulk chunk size).",
    )
    similar_max_vectors: int = Field(
        250_000,
        gt=0,
        description="Most feature vectors the similarity index holds in memory (float32: 1280 dimensions are "
        "5 KiB each, so 250000 are about 1.2 GiB); /getsimilar answers 503 once the library has more.",
    )
    similar_ann_min_vectors: int = Field(
        20_000,
        ge=0,
        description="From this many feature vectors on, /getsimilar scores every image on the library's first 128 "
        "principal components (fitted when the index reaches this size and again each time it doubles) and only "
        "the best few hundred on the full vectors; the similarities answered are exact, the choice of candidates "
        "approximate. Below it the search is exact. 0: always exact. The projections cost 512 bytes a vector on "
        "top of the exact index.",
    )
    similar_sync_seconds: float = Field(
        2.0,
        ge=0,
        description="How often at most the similarity index reads the vectors other processes (replicas, the "
        "rater's embedding work) stored since it last looked; 0: before every search.",
    )
    duplicate_upload_distance: int = Field(
        4,
        ge=0,
        le=4,
        description="An upload's answer names a stored image as its near_duplicate_of when their perceptual "
        "hashes differ in at most this many of 64 bits (every such image is found: 4 is the most the hash "
        "bands guarantee).",
    )
    duplicate_hash_distance: int = Field(
        12,
        ge=0,
        le=32,
        description="Near-duplicate candidates by hash: images whose 64-bit hashes share a band and differ in "
        "at most this many bits; each is confirmed by feature similarity (DATASET_DUPLICATE_MIN_SIMILARITY).",
    )
    duplicate_min_similarity: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Cosine similarity of the feature vectors that confirms a candidate found by hash.",
    )
    duplicate_neighbour_similarity: float = Field(
        0.75,
        ge=0,
        le=1,
        description="Near-duplicate candidates by features: an image's nearest neighbours in the similarity "
        "index at or above this cosine similarity (crops move the hash but barely the features).",
    )
    duplicate_neighbours: int = Field(
        8,
        ge=0,
        le=64,
        description="Nearest neighbours by feature vector each image's duplicate check looks at (candidates "
        "the hash misses: crops); 0 turns that stage off. It is exact search: about 2 x library size x 1280 "
        "multiply-adds per image (40 ms at 100000 images on two cores).",
    )
    duplicate_min_alignment: float = Field(
        0.9,
        ge=0,
        le=1,
        description="A candidate pair is confirmed only when one picture matches the other, or a region of 82-100 "
        "% of each of its sides (a crop), with at least this normalized correlation of their 32x32 grey "
        "pictures: pictures that merely look alike (same subject, another shot) score well below.",
    )
    duplicate_batch_images: int = Field(
        2048, ge=1, le=100_000, description="Images the background duplicate grouping compares per transaction."
    )
    embed_batch_size: int = Field(
        16,
        ge=1,
        le=1024,
        description="Images per Embed call (keep it within TAGRATE_MAX_BULK_FILES and the bulk chunk size).",
    )
    tag_score_floor: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Tag scores stored from at least this (or the model's threshold, if lower), so the "
        "threshold can change later without running the model again.",
    )
    tag_max_per_image: int = Field(
        200, ge=1, description="Most tag scores stored per image and model (the highest ones)."
    )
    background_work: bool = Field(
        True,
        description="Run the background worker that tags new images and computes their feature vectors "
        "from the durable work queue. Off: the queue only fills (another replica, or /updatetags, drains it).",
    )
    background_yield_seconds: float = Field(
        5.0,
        ge=0,
        description="Background work (tagging, feature vectors, ahead-of-time thumbnails) waits while requests "
        "in this service are short of CPU (an import at full speed), at most this long before it does one "
        "batch anyway; the backlog drains once the requests ease off. 0: never waits. Linux only.",
    )
    work_poll_seconds: float = Field(
        5.0, gt=0, description="How often an idle worker looks for work added by other replicas."
    )
    work_model_check_seconds: float = Field(
        30.0,
        gt=0,
        description="How often an idle worker asks the tagger and rater which model they run; a new one has "
        "every stored image re-tagged (or re-embedded) in the background.",
    )
    work_backoff_initial_seconds: float = Field(
        1.0, gt=0, description="First wait before retrying while the tagger or rater is unreachable."
    )
    work_backoff_max_seconds: float = Field(
        30.0, gt=0, description="Longest wait between retries (it doubles from the initial one)."
    )
    work_lease_seconds: float = Field(
        300.0,
        gt=0,
        description="How long claimed work stays reserved for one worker; a worker that died mid-batch "
        "releases it when this runs out. Must exceed the tagger and rater deadlines.",
    )
    work_max_attempts: int = Field(
        3,
        ge=1,
        description="Model calls an image's tagging or embedding may fail (an error from the tagger or rater, "
        "or the service dying or timing out during the call) before the work is parked as failed; "
        "RetryFailedWork (/retryfailed), /updatetags for tagging, or a new model tries it again. A service "
        "that is merely down or busy costs no attempt.",
    )
    work_retry_seconds: float = Field(
        10.0,
        gt=0,
        description="Wait before work that failed is tried again (alone, not in a batch); doubles with each "
        "further failure.",
    )
    work_log_summary_seconds: float = Field(
        60.0,
        gt=0,
        description="The background worker logs each batch at DEBUG and, at INFO, a summary of the work done "
        "at most this often (the first one at once).",
    )
    score_chunk_images: int = Field(
        2048,
        ge=1,
        le=4096,
        description="Cached feature vectors per ScoreFeatures call when stored images are scored for a new model "
        "(one matrix product and one transaction each; the next chunk is read while the rater scores this one). "
        "2048 vectors of 1280 floats are 10 MiB on the wire, within the services' gRPC message limit "
        "(TAGRATE_BULK_CHUNK_BYTES + 1 MiB); larger chunks cost memory and gain little.",
    )
    failed_work_listed: int = Field(
        50, ge=0, description="Most failed work items /verifydatasets lists by name (their counts are complete)."
    )

    @model_validator(mode="after")
    def _derive_paths(self) -> DatasetSettings:
        root = self.data_dir / "dataset"
        if not self.database_url:
            self.database_url = f"sqlite:///{root / 'tagrate.db'}"
        if self.blob_dir is None:
            self.blob_dir = root / "blobs"
        if self.cache_dir is None:
            self.cache_dir = root / "cache"
        return self

    @model_validator(mode="after")
    def _check_lease(self) -> DatasetSettings:
        longest = max(self.tagger_timeout_seconds, self.rater_timeout_seconds)
        if self.work_lease_seconds <= longest:
            raise ValueError(
                f"work_lease_seconds ({self.work_lease_seconds:g}) must exceed the tagger and rater deadlines "
                f"({longest:g}s), or a slow batch would be claimed twice"
            )
        return self

    @property
    def blob_path(self) -> Path:
        """``blob_dir``, always set after validation."""
        assert self.blob_dir is not None
        return self.blob_dir

    def blob_stores(self) -> tuple[ObjectStore, ObjectStore]:
        """The object stores of originals and of resized versions."""
        return (
            self.object_store(self.blob_backend, self.blob_path, "blobs/"),
            self.object_store(self.blob_backend, self.cache_path, "cache/"),
        )

    @property
    def cache_path(self) -> Path:
        """``cache_dir``, always set after validation."""
        assert self.cache_dir is not None
        return self.cache_dir
