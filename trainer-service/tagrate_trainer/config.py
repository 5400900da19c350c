"""Settings of the trainer service (``TRAINER_*`` plus the shared
``TAGRATE_*`` ones). Every environment variable the service reads is
declared here."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from tagrate_common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, ServiceSettings
from tagrate_common.objectstore import Backend, ObjectStore, S3Settings


class TrainerSettings(ServiceSettings, S3Settings):
    """Where the trainer listens, which services it uses and how it trains.

    The jobs database, left unset, is SQLite at ``<data_dir>/trainer/jobs.db``;
    copies of the global heads it published live next to it.
    """

    model_config = SettingsConfigDict(env_prefix="TRAINER_")

    port: int = Field(DEFAULT_PORTS["trainer"], ge=0, le=65535, description="gRPC port (0 picks a free one).")
    metrics_port: int = Field(
        DEFAULT_METRICS_PORTS["trainer"], ge=0, le=65535, description="Prometheus HTTP port; 0 disables it."
    )
    dataset_addr: str = Field(
        f"127.0.0.1:{DEFAULT_PORTS['dataset']}",
        description='host:port of the dataset service (training data, snapshots); "" means not configured.',
    )
    rater_addr: str = Field(
        f"127.0.0.1:{DEFAULT_PORTS['rater']}",
        description='host:port of the rater service (extractor id, publishing heads); "" means not configured.',
    )
    heads_backend: Backend = Field(
        "fs",
        description="Where the copy of the last global head this trainer published is kept (the prior of "
        "personal heads): `fs`, <data_dir>/trainer/global-head; `s3`, the bucket TRAINER_S3_BUCKET under "
        "`<TRAINER_S3_PREFIX>trainer/`, which every trainer replica shares (docs/storage.md).",
    )
    stream_timeout_seconds: float = Field(
        600.0, gt=0, description="Deadline for streaming one job's training data from the dataset service."
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the jobs database (job records survive a restart). "
        "Empty: SQLite at <data_dir>/trainer/jobs.db (derived).",
    )
    min_ratings: int = Field(10, ge=3, description="Fewest ratings a user needs before a model can be trained.")
    max_epochs: int = Field(200, ge=1, description="Most epochs the MLP candidate trains for.")
    patience: int = Field(
        12, ge=1, description="Early stopping: epochs without a better validation loss before the MLP stops."
    )
    validation_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=0.5,
        description="Share of the ratings held out for the reported figures (and, of the rest, for choosing the head).",
    )
    seed: int = Field(
        0,
        ge=0,
        description="Seed of the held-out split, the CV folds and every random draw of the MLP's training "
        "(same ratings and seed: the same head).",
    )
    batch_size: int = Field(64, ge=1, description="MLP mini-batch size.")
    hidden_units: int = Field(256, ge=1, description="Hidden layer width of the MLP candidate.")
    learning_rate: float = Field(1e-3, gt=0, description="MLP learning rate (AdamW).")
    weight_decay: float = Field(1e-2, ge=0, description="MLP weight decay (AdamW).")
    device: str = Field("cpu", description="Where heads train: `cpu`, `auto` (CUDA when available), `cuda[:N]`.")
    torch_threads: int = Field(
        1,
        ge=0,
        description="CPU threads torch uses for training; 0: all cores. One keeps a job from fighting the model "
        "services for cores (oversubscribed threads slow small matrix products several times over); heads "
        "are small enough that more threads gain little.",
    )
    stop_wait_seconds: float = Field(
        2.0, ge=0, description="How long StopTraining waits for the job to acknowledge before answering."
    )

    job_lease_seconds: float = Field(
        15.0,
        gt=0,
        description="Replicas sharing a PostgreSQL jobs database: a replica renews its running job's lease every "
        "third of this; a job whose replica died is taken over by another once its lease is this old.",
    )

    taught_tag_min_examples: int = Field(
        8,
        ge=2,
        description="Fewest images with a manual tag (and a cached feature vector) before the trainer learns "
        "the tag and applies it as a taught tag.",
    )
    taught_tag_precision: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Precision a taught tag's threshold is chosen for (by cross-validation on its examples).",
    )
    taught_tag_others: int = Field(
        1000, ge=10, le=5000, description="Other images sampled as negatives when a tag is learned."
    )
    taught_tag_poll_seconds: float = Field(
        30.0, ge=0, description="How often the trainer looks for tags whose examples changed; 0 turns taught tags off."
    )
    taught_tag_settle_seconds: float = Field(
        10.0,
        ge=0,
        description="A tag is learned again once its examples have not changed for this long (tagging a "
        "batch triggers one relearning).",
    )
    retrain_after_ratings: int = Field(
        10,
        ge=0,
        description="Automatic retraining: a user's model is trained in the background once this many of their "
        "ratings were added, changed or removed since it was last trained (or tried); 0 turns it off.",
    )
    retrain_min_interval_seconds: float = Field(
        60.0, ge=0, description="Automatic retraining: at most one automatic training per user in this time."
    )
    retrain_quiet_seconds: float = Field(
        3.0,
        ge=0,
        description="Automatic retraining: wait until a user's ratings stayed unchanged this long (a burst of "
        "ratings gives one training, not one per 10), but no longer than the minimum interval.",
    )
    retrain_poll_seconds: float = Field(
        2.0, gt=0, description="Automatic retraining: how often the trainer asks the dataset service for changes."
    )
    retrain_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Automatic retraining: how much the training thread's CPU priority is lowered (Linux nice), "
        "so it never slows requests.",
    )

    @model_validator(mode="after")
    def _derive_paths(self) -> TrainerSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'trainer' / 'jobs.db'}"
        return self

    @property
    def trainer_dir(self) -> Path:
        """The trainer's own folder under the data directory."""
        return self.data_dir / "trainer"

    def global_head_store(self) -> ObjectStore:
        """Where the copy of the global head this trainer published is kept (``heads_backend``)."""
        return self.object_store(self.heads_backend, self.trainer_dir / "global-head", "trainer/")
