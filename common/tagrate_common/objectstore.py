"""Where services keep whole files (the dataset service's image blobs, the
rater's heads): one small interface, :class:`ObjectStore`, over two
backends.

- :class:`FsObjects`: a folder (local disk, or a volume several replicas
  mount). Keys are relative paths. Every object appears atomically and
  durably (:func:`~tagrate_common.files.write_atomically`: temp file, fsync,
  rename, fsync of the folder, and of each folder it had to create).
- :class:`S3Objects`: an S3-compatible bucket (AWS S3, MinIO, ...) through
  boto3, under a key prefix. A PUT of one body is atomic: a reader sees the
  old object or the whole new one, never part, and a client killed mid-PUT
  leaves nothing. Objects are always sent with a single ``put_object`` (never
  a multipart upload, whose parts could be left behind), so an object's size
  is bounded by S3's 5 GiB single-PUT limit, far above any upload limit.

Both agree on what the services rely on: ``put`` returns only once the
object is complete and durable; ``get`` of a missing key raises
FileNotFoundError; ``delete`` of a missing key is not an error; listings
are of complete objects only. Credentials for S3 come from the standard AWS
sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an
instance or pod role), as boto3 finds them; the region from the service's
``S3_REGION`` setting or ``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from .errors import Unavailable
from .files import TEMP_PREFIX, free_bytes, fsync_dir, write_atomically

log = logging.getLogger(__name__)

Backend = Literal["fs", "s3"]


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float  # Unix seconds


def check_key(key: str) -> str:
    """``key`` when it is a safe relative key: non-empty ``/``-separated
    parts, none ``.``/``..`` or a temp file's name. Keys are always built by
    the services, never taken from clients; this is a guard, not validation."""
    parts = key.split("/")
    if not key or any(not p or p in (".", "..") or p.startswith(TEMP_PREFIX) for p in parts):
        raise ValueError(f"not a valid object key: {key[:100]!r}")
    return key


class ObjectStore(ABC):
    """Whole objects under string keys (``a/b/c.ext``)."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Stores ``data`` under ``key``, replacing any object there: all at
        once, durable when this returns."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is none."""

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    @abstractmethod
    def delete(self, key: str) -> None:
        """Removes the object; no error when there is none."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every complete object whose key starts with ``prefix`` (at any depth)."""

    @abstractmethod
    def children(self, prefix: str = "") -> list[str]:
        """The names of the "folders" right under ``prefix`` (which is empty
        or ends with ``/``): the next key part of the keys below it that
        have more parts."""

    def free_bytes(self) -> int | None:
        """Bytes that may still be written, or None when the backend sets no
        limit this service can see (an object store)."""
        return None

    def remove_stale_temps(self, older_than_seconds: float) -> int:
        """Deletes unfinished writes left by a crash that are older than the
        given age (younger ones may be in progress in another process);
        returns how many. Backends whose writes are atomic leave none."""
        return 0

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the objects are, for logs: a path or ``s3://bucket/prefix``."""


class FsObjects(ObjectStore):
    """Objects as files under ``root``; a key is a relative path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def location(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        missing = [p for p in path.parents if p != self.root and self.root in p.parents and not p.is_dir()]
        write_atomically(path, data)
        # Folders the write created are durable entries of their parents too.
        for folder in reversed(missing):
            fsync_dir(folder.parent)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def size(self, key: str) -> int | None:
        path = self.path(key)
        try:
            return path.stat().st_size if path.is_file() else None
        except FileNotFoundError:  # removed meanwhile
            return None

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)  # a delete that a crash cannot undo

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        folder_key, _, name_prefix = prefix.rpartition("/")
        folder = self.root / folder_key if folder_key else self.root
        try:
            entries = sorted(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if not entry.name.startswith(name_prefix) or entry.name.startswith(TEMP_PREFIX):
                continue
            paths = entry.rglob("*") if entry.is_dir() else [entry]  # streamed: a cache folder holds every image
            for path in paths:
                if path.name.startswith(TEMP_PREFIX):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # removed meanwhile
                if path.is_file():
                    yield StoredObject(path.relative_to(self.root).as_posix(), stat.st_size, stat.st_mtime)

    def children(self, prefix: str = "") -> list[str]:
        folder = self.root / prefix.rstrip("/") if prefix else self.root
        try:
            return sorted(p.name for p in folder.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def free_bytes(self) -> int | None:
        return free_bytes(self.root)

    def temp_files(self) -> Iterator[Path]:
        """Unfinished writes (left behind only when a process died mid-write)."""
        yield from self.root.rglob(f"{TEMP_PREFIX}*")

    def remove_stale_temps(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in list(self.temp_files()):
            try:
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # finished or removed meanwhile
        return removed


_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


@contextlib.contextmanager
def _answered(location: str, key: str) -> Iterator[None]:
    """Turns the S3 client's failures into what callers handle: a missing
    key is FileNotFoundError, anything else (the store unreachable, refusing
    the credentials, a missing bucket) :class:`Unavailable` (503), with the
    details logged here rather than sent to clients."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            raise FileNotFoundError(f"{location}{key}") from None
        log.warning("the object store %s refused a request for %s: %s", location, key, exc)
        raise Unavailable(f"the storage is not available ({code}); try again later", "storage_unavailable") from exc
    except BotoCoreError as exc:
        log.warning("the object store %s did not answer a request for %s: %s", location, key, exc)
        raise Unavailable("the storage is not available; try again later", "storage_unavailable") from exc


class S3Objects(ObjectStore):
    """Objects in an S3-compatible bucket under ``prefix`` (empty, or ending
    with ``/``). ``client`` is a boto3 S3 client (thread-safe). Failures
    other than a missing key are :class:`Unavailable`."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes) -> None:
        with _answered(self.location, key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        with _answered(self.location, key):
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        return body

    def size(self, key: str) -> int | None:
        try:
            with _answered(self.location, key):
                answer = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            return None
        return int(answer["ContentLength"])

    def delete(self, key: str) -> None:
        with _answered(self.location, key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _pages(self, prefix: str, **options: str) -> Iterator[dict[str, Any]]:
        with _answered(self.location, prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            yield from paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, **options)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        for page in self._pages(prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                yield StoredObject(key, int(item["Size"]), item["LastModified"].timestamp())

    def children(self, prefix: str = "") -> list[str]:
        start = len(self.prefix + prefix)
        return sorted(
            common["Prefix"][start:].rstrip("/")
            for page in self._pages(prefix, Delimiter="/")
            for common in page.get("CommonPrefixes", [])
        )


class S3Settings(BaseSettings):
    """The S3 settings of a service that can keep its files in a bucket
    (mixed into its settings class, so they take its prefix)."""

    s3_bucket: str = Field("", description="The S3 bucket (with the `s3` backend); it must exist.")
    s3_endpoint_url: str = Field(
        "",
        description="The S3 API's URL for an S3-compatible server (MinIO: `http://minio:9000`); empty: AWS S3. "
        "Credentials and region come from the standard AWS variables (`AWS_ACCESS_KEY_ID`, "
        "`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`) or a pod/instance role.",
    )
    s3_region: str = Field("", description="The bucket's region; empty: `AWS_DEFAULT_REGION` or boto3's default.")
    s3_prefix: str = Field("", description="Key prefix of this service's objects in the bucket (e.g. `tagrate/`).")

    def object_store(self, backend: Backend, root: Path, sub: str = "") -> ObjectStore:
        """The store for ``backend``: the folder ``root``, or the bucket
        under ``<s3_prefix><sub>``."""
        if backend == "fs":
            return FsObjects(root)
        if not self.s3_bucket:
            raise ValueError("the s3 backend needs a bucket: set the service's S3_BUCKET setting")
        base = self.s3_prefix if not self.s3_prefix or self.s3_prefix.endswith("/") else self.s3_prefix + "/"
        return S3Objects(s3_client(self.s3_endpoint_url, self.s3_region), self.s3_bucket, base + sub)


def s3_client(endpoint_url: str = "", region: str = "") -> Any:
    """A boto3 S3 client with standard retries and a connection pool wide
    enough for the services' worker threads."""
    import boto3  # only services configured for S3 load it
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 4, "mode": "standard"}, max_pool_connections=32, connect_timeout=5, read_timeout=30
    )
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config)
