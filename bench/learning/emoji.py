"""The learning benchmark's images: the Twemoji PNGs of an npm package
(fetched once with ``npm pack``), and their feature vectors and mirror
images' through the default model (cached)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGE, VERSION = "emoji-datasource-twitter", "16.0.0"
CACHE = Path(__file__).resolve().parents[1] / "results" / "learning"
ATTRIBUTION = (
    f"Images: Twemoji by Twitter, Inc and other contributors, CC-BY 4.0 (https://github.com/twitter/twemoji), "
    f"from the npm package {PACKAGE} {VERSION} (MIT, https://github.com/iamcal/emoji-data)."
)


EMBED_BATCH = 32


def fetch() -> tuple[list[dict], dict[str, bytes]]:
    """The emoji records with a Twemoji image, and the PNGs by file name."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"{PACKAGE}-{VERSION}.tgz"
    if not tarball.exists():
        print(f"fetching {PACKAGE}@{VERSION} with npm pack into {CACHE} ...", flush=True)
        subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}"], cwd=CACHE, check=True, capture_output=True)
    pngs: dict[str, bytes] = {}
    records: list[dict] = []
    with tarfile.open(tarball) as archive:
        for member in archive:
            if member.name == "package/emoji.json":
                records = json.load(archive.extractfile(member))  # type: ignore[arg-type]
            elif member.name.startswith("package/img/twitter/64/") and member.name.endswith(".png"):
                pngs[member.name.rsplit("/", 1)[1]] = archive.extractfile(member).read()  # type: ignore[union-attr]
    usable = [r for r in records if r.get("has_img_twitter") and r["image"] in pngs and r["category"] != "Component"]
    return sorted(usable, key=lambda r: r["image"]), pngs


def features() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Feature vectors of every emoji and of its mirror image, categories, subcategories (cached)."""
    cached = CACHE / "features.npz"
    if cached.exists():
        data = np.load(cached)
        return data["plain"], data["flipped"], list(data["category"]), list(data["subcategory"])
    from tagrate_common.vision.loaders import load_default_model

    records, pngs = fetch()
    model = load_default_model("cpu")
    plain, flipped = [], []
    start = time.perf_counter()
    for begin in range(0, len(records), EMBED_BATCH):
        images = []
        for record in records[begin : begin + EMBED_BATCH]:
            rgba = Image.open(io.BytesIO(pngs[record["image"]])).convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # as the image store flattens alpha
            canvas.alpha_composite(rgba)
            images.append(canvas.convert("RGB"))
        plain.append(model.forward_features(np.stack([model.preprocess(i) for i in images])))
        mirrored = [i.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for i in images]
        flipped.append(model.forward_features(np.stack([model.preprocess(i) for i in mirrored])))
    print(f"features of {len(records)} emoji (and mirrors) in {time.perf_counter() - start:.0f}s", flush=True)
    result = (
        np.concatenate(plain).astype(np.float32),
        np.concatenate(flipped).astype(np.float32),
        [r["category"] for r in records],
        [r["subcategory"] for r in records],
    )
    np.savez(cached, plain=result[0], flipped=result[1], category=result[2], subcategory=result[3])
    return result
