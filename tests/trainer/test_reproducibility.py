"""The same ratings and seed train the same MLP head, bit for bit, in any
process. Torch seeds its global generator at random in each process, and
dropout draws its masks from that generator: before the trainer seeded it
for the MLP's training, every process trained a different global head."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tagrate_common.vision.torch_models import EfficientNetLiteModel
from tagrate_trainer.selection.candidates import MLP_CANDIDATE, fit_candidate
from tagrate_trainer.training import TrainingConfig, TrainingData

from .scenes import rated_scenes, taste

OPTIONS = {"max_epochs": 8, "patience": 3, "hidden_units": 64}
CONFIG = TrainingConfig(**OPTIONS)
USERS = 4

# Trains the MLP candidate (what a global head of many ratings is) in a fresh
# interpreter on the saved data and writes its serialised weights.
SCRIPT = """
import json
import torch
torch.set_num_threads(1)  # as the comparison in the test's own process
import sys
import numpy as np
from tagrate_trainer.selection.candidates import MLP_CANDIDATE, fit_candidate
from tagrate_trainer.training import TrainingConfig, TrainingData

saved = np.load(sys.argv[1])
data = TrainingData(saved["features"], saved["ratings"], [str(name) for name in saved["images"]])
head, _ = fit_candidate(MLP_CANDIDATE, data, TrainingConfig(**json.loads(sys.argv[3])))
with open(sys.argv[2], "wb") as out:
    out.write(head.weights())
"""


def global_ratings(model: EfficientNetLiteModel) -> TrainingData:
    """Real scenes embedded by the real backbone, each rated by several
    users with their own noise: the shape of the global head's data."""
    scenes = rated_scenes(40, seed=11)
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png, _, _ in scenes]
    vectors = np.asarray(model.forward_features(np.stack([model.preprocess(i) for i in images])), dtype=np.float32)
    rng = np.random.default_rng(5)
    features, ratings, names = [], [], []
    for _ in range(USERS):
        for i, (_, t, _) in enumerate(scenes):
            features.append(vectors[i])
            ratings.append(taste(t, rng, noise=0.15))
            names.append(f"scene-{i}")
    return TrainingData(np.stack(features), np.asarray(ratings, dtype=np.float32), names)


def train_elsewhere(saved: Path, out: Path, hash_seed: str) -> bytes:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(saved), str(out), json.dumps(OPTIONS)], env=env, check=True, timeout=120
    )
    return out.read_bytes()


def test_the_mlp_head_is_the_same_in_every_process(tmp_path, default_model):
    data = global_ratings(default_model)
    saved = tmp_path / "data.npz"
    np.savez(saved, features=data.features, ratings=data.ratings, images=np.asarray(data.images))

    first = train_elsewhere(saved, tmp_path / "first.bin", "1")
    second = train_elsewhere(saved, tmp_path / "second.bin", "2")
    assert first == second

    # In this process too, after whatever drew from torch's generator before.
    # On one thread, as the other processes: an earlier test in this worker
    # may have set another count, which sums in another order (bits differ
    # for a reason that is not the generator's).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here, _ = fit_candidate(MLP_CANDIDATE, data, CONFIG)
    finally:
        torch.set_num_threads(threads)
    assert here.weights() == first
