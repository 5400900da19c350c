"""/rate and /ratebulk end to end: real HTTP to the real gateway, real gRPC
to the real rater (the embedded EfficientNet-Lite0's features) and the real
dataset service on SQLite, which knows the users because they rated through
/addrating. Heads are published through the rater's real PublishHead RPC."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import common_pb2, rater_pb2, rater_pb2_grpc
from tagrate_common.vision.models import ImageModel
from tagrate_common.vision.rating_heads import serialize_weights
from tagrate_dataset.server import create_server as create_dataset_server
from tagrate_rater.config import RaterSettings
from tagrate_rater.server import create_server as create_rater_server
from tests.imagefactory import bomb_png, make_image, truncated_jpeg
from tests.support import dataset_settings, free_port

from .answers import assert_error
from .conftest import TEST_UPLOAD_LIMIT, GatewayServer, gateway_settings
from .stack import add_rating

DIMENSIONS = 1280
BULK_FILES = 4
USERS = ("alice", "bob", "carol")


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@dataclass
class RateStack:
    dataset: GrpcServer
    rater: GrpcServer
    gateway: GatewayServer
    channel: grpc.Channel
    stub: rater_pb2_grpc.RaterServiceStub
    extractor_id: str

    def publish(self, user: str, weights: bytes, kind: str = "linear") -> str:
        metadata = rater_pb2.HeadMetadata(user=user, kind=kind, extractor_id=self.extractor_id, snapshot_id="s")
        reply = self.stub.PublishHead(rater_pb2.PublishHeadRequest(metadata=metadata, weights=weights), timeout=30)
        return reply.metadata.version

    def features(self, data: bytes) -> np.ndarray:
        reply = self.stub.Embed(rater_pb2.EmbedRequest(images=[common_pb2.ImageFile(data=data)]), timeout=30)
        return np.array(reply.vectors[0].values, dtype=np.float64)


def start_rate_stack(model: ImageModel, data_dir: Path) -> RateStack:
    dataset = create_dataset_server(dataset_settings(data_dir))
    dataset_addr = f"127.0.0.1:{dataset.start()}"
    rater = create_rater_server(
        RaterSettings(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            device="cpu",
            heads_dir=data_dir / "heads",
            dataset_addr=dataset_addr,
            max_upload_bytes=TEST_UPLOAD_LIMIT,
            max_bulk_files=BULK_FILES,
            shutdown_grace_seconds=1.0,
        ),
        model=model,
    )
    rater_addr = f"127.0.0.1:{rater.start()}"
    gateway = GatewayServer(
        gateway_settings(dataset_addr, data_dir, rater_addr=rater_addr, max_bulk_files=BULK_FILES)
    ).start()
    channel = grpc.insecure_channel(rater_addr)
    stub = rater_pb2_grpc.RaterServiceStub(channel)
    info = stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=30)
    return RateStack(dataset, rater, gateway, channel, stub, info.extractor_id)


@pytest.fixture(scope="module")
def stack(tagger_model: ImageModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RateStack]:
    """Dataset service + rater + gateway; the users rated one image each."""
    stack = start_rate_stack(tagger_model, tmp_path_factory.mktemp("rate"))
    try:
        with httpx.Client(base_url=stack.gateway.url, timeout=30) as http:
            for seed, user in enumerate(USERS):
                response = add_rating(http, make_image("PNG", seed=seed), user, "0.5", "seed.png")
                assert response.status_code == 200, response.text
        yield stack
    finally:
        stack.gateway.stop()
        stack.channel.close()
        stack.rater.stop(1.0)
        stack.dataset.stop(0)


@pytest.fixture(scope="module")
def http(stack: RateStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {name: jpeg(getattr(skimage.data, name)()) for name in ("chelsea", "coffee", "rocket")}


def linear(rng: np.random.Generator, bias: float) -> tuple[bytes, np.ndarray, float]:
    weight = rng.normal(0, 0.05, DIMENSIONS)
    return serialize_weights({"weight": weight, "bias": np.array(bias)}), weight, bias


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def rate(http: httpx.Client, user: str, data: bytes, filename: str = "photo.jpg") -> httpx.Response:
    return http.post("/rate", data={"user": user}, files={"image": (filename, data)})


def rate_bulk(http: httpx.Client, files: list[tuple[str, bytes]], user: str | None = None) -> httpx.Response:
    return http.post("/ratebulk", data={"user": user} if user is not None else {}, files=[("images", f) for f in files])


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_rating_flow_from_no_model_to_personal_and_global(stack: RateStack, http: httpx.Client, photos) -> None:
    cat, cup, rocket = photos["chelsea"], photos["coffee"], photos["rocket"]
    for response in (rate(http, "alice", cat), rate(http, "all", cat), rate_bulk(http, [("a.jpg", cat)])):
        body = assert_error(response, 409, "no_model")
        assert "no rating model exists yet" in body["error"] and "/trainuser" in body["error"]

    rng = np.random.default_rng(7)
    weights, weight, bias = linear(rng, 0.2)
    version = stack.publish("alice", weights)
    alice = ok(rate(http, "alice", cat))
    assert set(alice) == {"user", "rating", "model", "model_version"}
    assert (alice["user"], alice["model"], alice["model_version"]) == ("alice", "personal", version)
    assert alice["rating"] == pytest.approx(sigmoid(stack.features(cat) @ weight + bias), abs=1e-5)
    assert_error(rate(http, "bob", cat), 409, "no_model")
    assert ok(rate(http, "all", cat)) == {"ratings": [["alice", alice["rating"]]], "models": {"alice": "personal"}}

    global_weights, global_weight, global_bias = linear(rng, -0.1)
    global_version = stack.publish("all", global_weights)
    bob = ok(rate(http, "bob", cat))
    assert (bob["model"], bob["model_version"]) == ("global", global_version)
    assert bob["rating"] == pytest.approx(sigmoid(stack.features(cat) @ global_weight + global_bias), abs=1e-5)
    assert ok(rate(http, "alice", cat)) == alice  # the global head does not replace a personal one

    everyone = ok(rate(http, "all", cat))
    assert set(everyone) == {"ratings", "models"}
    assert [user for user, _ in everyone["ratings"]] == sorted(USERS)
    assert everyone["models"] == {"alice": "personal", "bob": "global", "carol": "global"}
    for user, rating in everyone["ratings"]:
        assert rating == pytest.approx(ok(rate(http, user, cat))["rating"], abs=1e-5)

    uploads = [("cup.jpg", cup), ("cat.jpg", cat), ("rocket.jpg", rocket), ("cup again.jpg", cup)]
    bulk = ok(rate_bulk(http, uploads, "alice"))
    assert set(bulk) == {"user", "ratings"} and bulk["user"] == "alice"
    singles = [ok(rate(http, "alice", data))["rating"] for _, data in uploads]
    np.testing.assert_allclose(bulk["ratings"], singles, atol=1e-5)
    assert bulk["ratings"][1] == pytest.approx(alice["rating"], abs=1e-5)

    table = ok(rate_bulk(http, uploads))  # user defaults to all
    assert set(table) == {"users", "ratings"} and table["users"] == sorted(USERS)
    assert len(table["ratings"]) == len(uploads) and all(len(row) == len(USERS) for row in table["ratings"])
    for (_, data), row in zip(uploads, table["ratings"], strict=True):
        expected = [rating for _, rating in ok(rate(http, "all", data))["ratings"]]
        np.testing.assert_allclose(row, expected, atol=1e-5)
    assert ok(rate_bulk(http, uploads, "all")) == table
    assert ok(rate_bulk(http, uploads, "bob"))["ratings"] == [row[1] for row in table["ratings"]]

    body = assert_error(rate(http, "zoe", cat), 404, "user_not_found")
    assert "'zoe'" in body["error"]
    assert_error(rate_bulk(http, uploads, "zoe"), 404, "user_not_found")


@pytest.fixture(scope="module")
def served(stack: RateStack) -> RateStack:
    """The stack with a global head, so a request gets past the model check."""
    stack.publish("all", serialize_weights({"weight": np.zeros(DIMENSIONS), "bias": np.array(0.0)}))
    return stack


@pytest.mark.parametrize(
    ("form", "code", "words"),
    [
        ({}, "missing_parameter", "'user'"),
        ({"user": ""}, "missing_parameter", "'user'"),
        ({"user": "bad/name"}, "invalid_user", "1-64 characters"),
        ({"user": "x" * 65}, "invalid_user", "1-64 characters"),
        ({"user": "a b"}, "invalid_user", "1-64 characters"),
        ({"user": ".."}, "invalid_user", "1-64 characters"),
    ],
)
def test_bad_user_names_are_400(served, http: httpx.Client, photos, form, code, words) -> None:
    response = http.post("/rate", data=form, files={"image": ("cat.jpg", photos["chelsea"])})
    assert words in assert_error(response, 400, code)["error"]
    if form.get("user"):  # /ratebulk without a user rates for every user
        response = http.post("/ratebulk", data=form, files={"images": ("cat.jpg", photos["chelsea"])})
        assert words in assert_error(response, 400, code)["error"]


def test_all_is_reserved_where_it_names_one_user(served, http: httpx.Client, photos) -> None:
    """ "all" asks /rate for every user; where one user is meant it is refused."""
    assert set(ok(rate(http, "ALL", photos["chelsea"]))) == {"ratings", "models"}
    body = assert_error(add_rating(http, photos["chelsea"], "all", "0.5"), 400, "invalid_user")
    assert "reserved" in body["error"]
    assert_error(http.get("/getuserdata", params={"user": "all"}), 400, "invalid_user")


def test_bad_files_for_rate(served, http: httpx.Client, photos) -> None:
    cases = [
        (("notes.txt", b"just some text"), 415, "unsupported_image", "'notes.txt'"),
        (("empty.jpg", b""), 415, "empty_file", "'empty.jpg'"),
        (("cut.jpg", truncated_jpeg()), 415, "truncated_image", "'cut.jpg'"),
        (("bomb.png", bomb_png()), 413, "too_many_pixels", "'bomb.png'"),
        (("big.bmp", make_image("BMP", (400, 300), 1)), 413, "file_too_large", "'big.bmp'"),
    ]
    for upload, status, code, words in cases:
        body = assert_error(http.post("/rate", data={"user": "bob"}, files={"image": upload}), status, code)
        assert words in body["error"], body
    # Text parts only (still multipart/form-data): no file, or as text a name that is no stored image's.
    assert_error(http.post("/rate", files={"user": (None, "bob")}), 400, "missing_parameter")
    no_name = {"user": (None, "bob"), "image": (None, "cat.jpg")}
    assert_error(http.post("/rate", files=no_name), 400, "invalid_image_name")
    two = [("image", ("a.jpg", photos["chelsea"])), ("image", ("b.jpg", photos["coffee"]))]
    assert_error(http.post("/rate", data={"user": "bob"}, files=two), 413, "too_many_files")


def test_bad_files_for_ratebulk_are_named_by_position(served, http: httpx.Client, photos) -> None:
    good = ("cat.jpg", photos["chelsea"])
    cases = [
        ([good, ("notes.txt", b"hello")], 415, "unsupported_image", "file 2 ('notes.txt')"),
        ([good, good, ("cut.jpg", truncated_jpeg())], 415, "truncated_image", "file 3 ('cut.jpg')"),
        ([("bomb.png", bomb_png()), good], 413, "too_many_pixels", "file 1 ('bomb.png')"),
        ([good] * (BULK_FILES + 1), 413, "too_many_files", f"at most {BULK_FILES}"),
    ]
    for files, status, code, words in cases:
        for user in (None, "bob"):
            body = assert_error(rate_bulk(http, files, user), status, code)
            assert words in body["error"], body
    assert_error(http.post("/ratebulk", files={"user": (None, "bob")}), 400, "missing_parameter")
    assert_error(http.post("/ratebulk", files={"user": (None, "bob"), "images": (None, "x")}), 400, "not_a_file")


def test_rater_down_is_503_naming_it(tmp_path: Path, start_gateway, photos) -> None:
    settings = gateway_settings("", tmp_path, rater_addr=f"127.0.0.1:{free_port()}", rater_timeout_seconds=5)
    gateway = start_gateway(settings)
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        for response in (rate(http, "bob", photos["chelsea"]), rate_bulk(http, [("a.jpg", photos["chelsea"])])):
            body = assert_error(response, 503, "rater_unavailable")
            assert "rater" in body["error"]
