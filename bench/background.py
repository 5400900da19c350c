"""Background throughput: images/s the dataset service's worker tags and
embeds (tags + cached feature vector per image) after an import, until its
work queue drains, with the tagger giving the vectors from its own pass
("after", the default: one backbone pass per new image) against a rater
that must run the backbone again ("before": two passes).

Real processes: a tagger, a rater and a dataset service (SQLite in a
temporary folder), started the way ``make run`` starts them, on free ports.
The photos are real-size (1-3 MP) JPEGs made from scikit-image's sample
photographs with random crops, flips, scaling and colour shifts, generated
once and cached under ``bench/results/background-photos/``. Each round
imports them with the worker off, then starts the dataset service with its
worker on and times it from SERVING until VerifyDatasets reports no tag or
embed work pending; the rounds alternate between the two setups, so a
machine shared with other work slows both alike, and the table reports the
per-round ratio.

"before": the rater serves the same network and weights from a model folder
whose manifest has another name, so its extractor id differs from the
tagger's ``features_id`` and the dataset service embeds every image through
the rater: the same compute per pass as the one-pass default, run twice.

Target: after / before >= 1.8x. ``--images N`` (default 1000) and
``--rounds R`` (default 1) bound the time: about a minute per 1,000 images
per setup on two cores.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import skimage.data
from PIL import Image, ImageEnhance

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import common_pb2, images_pb2, work_pb2
from tagrate_common.vision.loaders import DEFAULT_LABELS_FILE, DEFAULT_MANIFEST, package_weights_path
from tagrate_common.vision.manifest import MANIFEST_FILE
from tests.support import REPO_ROOT, ServiceProcess, free_port

from .harness import median, print_table

PHOTO_DIR = REPO_ROOT / "bench" / "results" / "background-photos"
SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "motorcycle_left", "retina")
IMPORT_CHUNK = 16  # images per AddImages call (well under the message limit at 3 MP)
START_TIMEOUT = 300.0  # a first start exports the ONNX model


def _source_photos() -> list[np.ndarray]:
    photos = []
    for name in SOURCES:
        try:
            pixels = getattr(skimage.data, name)()
        except Exception:  # a sample that needs a download (pooch) on this install
            continue
        if pixels.ndim == 3 and pixels.shape[2] == 3:
            photos.append(pixels)
    return photos


def make_photos(count: int, seed: int = 17) -> list[Path]:
    """``count`` JPEG photos of 1-3 MP under PHOTO_DIR (made once, reused)."""
    PHOTO_DIR.mkdir(parents=True, exist_ok=True)
    paths = [PHOTO_DIR / f"photo-{seed}-{i:05d}.jpg" for i in range(count)]
    missing = [(i, p) for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        print(f"generating {len(missing)} photos into {PHOTO_DIR} ...", flush=True)
        sources = [Image.fromarray(p) for p in _source_photos()]
        for i, path in missing:
            rng = random.Random(seed * 1_000_003 + i)
            image = sources[i % len(sources)]
            w, h = image.size
            crop_w, crop_h = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
            left, top = rng.randint(0, w - crop_w), rng.randint(0, h - crop_h)
            image = image.crop((left, top, left + crop_w, top + crop_h))
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            megapixels = rng.uniform(1.0, 3.0)
            scale = (megapixels * 1e6 / (crop_w * crop_h)) ** 0.5
            image = image.resize((int(crop_w * scale), int(crop_h * scale)), Image.Resampling.BICUBIC)
            image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
            image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=rng.randint(80, 95))
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(buf.getvalue())
            tmp.rename(path)
    return paths


def renamed_model_dir(path: Path) -> Path:
    """The embedded EfficientNet-Lite0 as a model folder under another
    manifest name: the same network and weights, another model id."""
    path.mkdir(parents=True, exist_ok=True)
    manifest = DEFAULT_MANIFEST.model_copy(update={"name": "efficientnet-lite0-second-pass"})
    shutil.copyfile(package_weights_path(), path / manifest.weights)
    shutil.copyfile(DEFAULT_LABELS_FILE, path / manifest.labels)
    (path / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    return path


class Stack:
    """A tagger, a rater and (on demand) a dataset service in ``root``."""

    def __init__(self, root: Path, rater_model_dir: Path | None, models_dir: Path) -> None:
        self.root = root
        self.tagger_port, self.rater_port, self.dataset_port = free_port(), free_port(), free_port()
        common = {"TAGRATE_LOG_LEVEL": "WARNING"}
        self.tagger = ServiceProcess(
            "tagrate_tagger",
            {**common, "TAGGER_PORT": str(self.tagger_port), "TAGGER_METRICS_PORT": "0", "TAGGER_DEVICE": "cpu",
             "TAGRATE_DATA_DIR": str(models_dir)},
            root / "tagger.log",
            f"127.0.0.1:{self.tagger_port}",
        )  # fmt: skip
        rater_env = {**common, "RATER_PORT": str(self.rater_port), "RATER_METRICS_PORT": "0", "RATER_DEVICE": "cpu",
                     "TAGRATE_DATA_DIR": str(models_dir), "RATER_HEADS_DIR": str(root / "heads"),
                     "RATER_DATASET_ADDR": ""}  # fmt: skip
        if rater_model_dir is not None:
            rater_env["RATER_MODEL_DIR"] = str(rater_model_dir)
        self.rater = ServiceProcess("tagrate_rater", rater_env, root / "rater.log", f"127.0.0.1:{self.rater_port}")
        self.dataset: ServiceProcess | None = None

    def start_models(self) -> None:
        self.tagger.start(START_TIMEOUT)
        self.rater.start(START_TIMEOUT)

    def start_dataset(self, background: bool) -> ServiceProcess:
        env = {
            "TAGRATE_LOG_LEVEL": "WARNING",
            "DATASET_PORT": str(self.dataset_port),
            "DATASET_METRICS_PORT": "0",
            "TAGRATE_DATA_DIR": str(self.root / "data"),
            "DATASET_DATABASE_URL": f"sqlite:///{self.root / 'tagrate.db'}",
            "DATASET_TAGGER_ADDR": f"127.0.0.1:{self.tagger_port}",
            "DATASET_RATER_ADDR": f"127.0.0.1:{self.rater_port}",
            "DATASET_BACKGROUND_WORK": "true" if background else "false",
        }
        self.dataset = ServiceProcess(
            "tagrate_dataset", env, self.root / "dataset.log", f"127.0.0.1:{self.dataset_port}"
        ).start(START_TIMEOUT)
        return self.dataset

    def stop_dataset(self) -> None:
        if self.dataset is not None:
            self.dataset.terminate()
            self.dataset = None

    def stop(self) -> None:
        self.stop_dataset()
        for service in (self.rater, self.tagger):
            if service.proc is not None:
                service.terminate()


def cpu_seconds(service: ServiceProcess) -> float:
    """The process's CPU seconds so far (user + system)."""
    assert service.proc is not None
    text = Path(f"/proc/{service.proc.pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pending(stub: DatasetStubs) -> tuple[int, int]:
    """(work items pending, parked as failed) over every kind."""
    reply = stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=60)
    return sum(w.pending for w in reply.work), sum(w.failed for w in reply.work)


def one_round(
    setup: str, root: Path, photos: list[Path], rater_model_dir: Path | None, models_dir: Path
) -> tuple[float, dict[str, float]]:
    """Imports ``photos`` into a fresh stack; returns background images/s
    and each process's CPU milliseconds per image while the queue drained."""
    stack = Stack(root, rater_model_dir, models_dir)
    try:
        stack.start_models()
        stack.start_dataset(background=False)
        with grpc.insecure_channel(
            f"127.0.0.1:{stack.dataset_port}", [("grpc.max_send_message_length", 256 << 20)]
        ) as channel:
            stub = DatasetStubs(channel)
            for start in range(0, len(photos), IMPORT_CHUNK):
                files = [
                    common_pb2.ImageFile(data=p.read_bytes(), filename=p.name)
                    for p in photos[start : start + IMPORT_CHUNK]
                ]
                stub.images.AddImages(images_pb2.AddImagesRequest(images=files), timeout=120)
            queued, _ = pending(stub)
        stack.stop_dataset()
        dataset = stack.start_dataset(background=True)
        # From SERVING: the start-up (imports, migrations) is not background
        # work. The worker starts moments before, alike in both setups.
        began = time.monotonic()
        models_cpu = {"tagger": cpu_seconds(stack.tagger), "rater": cpu_seconds(stack.rater)}
        with grpc.insecure_channel(f"127.0.0.1:{stack.dataset_port}") as channel:
            stub = DatasetStubs(channel)
            while True:
                left, failed = pending(stub)
                if left == 0:
                    break
                time.sleep(0.25)
        elapsed = time.monotonic() - began
        cpu = {name: cpu_seconds(getattr(stack, name)) - before for name, before in models_cpu.items()}
        cpu["dataset (with start-up)"] = cpu_seconds(dataset)
        if failed:
            raise RuntimeError(f"{setup}: {failed} work items failed; see {root}")
        print(f"  {setup}: {len(photos)} images ({queued} work items) drained in {elapsed:.1f}s", flush=True)
        return len(photos) / elapsed, {name: 1000 * seconds / len(photos) for name, seconds in cpu.items()}
    finally:
        stack.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench background", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="photos imported per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=1, help="before/after pairs, alternating (default 1)")
    args = parser.parse_args(argv)
    photos = make_photos(args.images)
    models_dir = REPO_ROOT / "bench" / "results" / "background-models"  # the exported ONNX files, kept
    rows, ratios, cpu_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="tagrate-bench-background-") as tmp:
        second_pass = renamed_model_dir(Path(tmp) / "second-pass-model")
        for r in range(args.rounds):
            rates, cpus = {}, {}
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for setup in order:
                root = Path(tmp) / f"{setup}-{r}"
                root.mkdir()
                model_dir = second_pass if setup == "before" else None
                rates[setup], cpus[setup] = one_round(setup, root, photos, model_dir, models_dir)
            ratio = rates["after"] / rates["before"]
            ratios.append(ratio)
            rows.append((r + 1, f"{rates['before']:.1f}", f"{rates['after']:.1f}", f"{ratio:.2f}x"))
            for setup in ("before", "after"):
                cpu_rows.append((r + 1, setup, *(f"{cpus[setup][name]:.1f}" for name in cpus[setup])))
    print_table(
        f"Background tagging + features, {args.images} photos of 1-3 MP (images/s until the queue drains)",
        ["round", "before: two passes", "after: one pass", "after / before"],
        rows,
    )
    print_table(
        "CPU milliseconds per image while the queue drained",
        ["round", "setup", "tagger", "rater", "dataset (with start-up)"],
        cpu_rows,
    )
    verdict = "meets" if median(ratios) >= 1.8 else "MISSES"
    print(f"median ratio {median(ratios):.2f}x ({verdict} the 1.8x target)")
    return 0
