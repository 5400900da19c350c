"""The services the dataset service calls, as plain Python: the tagger (tag
scores for stored images) and the rater (their feature vectors). Failures
arrive as TagrateErrors naming the service, from
:class:`~tagrate_common.grpc_client.Backend`: Unavailable when it cannot be
reached (or is not configured), InvalidArgument and its kin when it refuses
an image. Both clients mark their calls as background work: the images this
service sends through a model (Tag, Embed) are imports no person waits on,
so the model services batch them behind interactive /tag and /rate calls
(calls that run no model, such as ScoreFeatures, are not affected)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from tagrate_common.batcher import BACKGROUND
from tagrate_common.errors import TagrateError, Unavailable
from tagrate_common.grpc_client import Backend
from tagrate_common.protos import common_pb2, rater_pb2, rater_pb2_grpc, tagger_pb2, tagger_pb2_grpc

from .config import DatasetSettings

TagList = list[tuple[str, float]]


@dataclass(frozen=True)
class ImageFile:
    """A stored image's bytes, as sent to a model service."""

    name: str
    data: bytes


@dataclass(frozen=True)
class ExtractorInfo:
    extractor_id: str
    dimensions: int


@dataclass(frozen=True)
class TaggerModelInfo:
    model_id: str
    threshold: float
    label_count: int
    # The id of the vectors its tagging pass can return ("": none).
    features_id: str = ""
    # The rater's extractor when it is the same backbone (its extractor id
    # equals features_id): tagging then also returns the vectors to cache,
    # one forward pass per image instead of two. Set by Tagging.
    embeds_for: ExtractorInfo | None = None
    # Its thresholds differ by category (or one rating is picked): tags are
    # asked for with no threshold, as the model selects them.
    per_category: bool = False


@dataclass(frozen=True)
class TagReply:
    """The tagger's answer for a batch: tags per image, the vectors of the
    same pass (when asked for), and each tag's category as the model gives it."""

    tags: list[TagList]
    vectors: np.ndarray | None
    categories: dict[str, str]


class ModelChanged(Unavailable):
    """The service answered from another model than the one just asked
    about (it was swapped in between): the batch is simply tried again."""


# INVALID_ARGUMENT codes about the request as a whole, not about one image:
# a bug on our side, never a reason to give up on an image.
_REQUEST_ERRORS = {"missing_parameter", "invalid_threshold", "invalid_limit"}


def refuses_image(exc: TagrateError) -> bool:
    """Whether a model service's error means it refused an image of the
    request (INVALID_ARGUMENT: not an image, damaged, over its limits)
    rather than failed (unreachable, overloaded, a bad request)."""
    return exc.grpc_status == grpc.StatusCode.INVALID_ARGUMENT and exc.code not in _REQUEST_ERRORS


class Peers:
    """Clients of the tagger and the rater for one dataset service."""

    def __init__(self, settings: DatasetSettings) -> None:
        size = settings.max_message_bytes
        self.tagger = Backend(
            "tagger",
            settings.tagger_addr,
            tagger_pb2_grpc.TaggerServiceStub,
            settings.tagger_timeout_seconds,
            size,
            priority=BACKGROUND,
        )
        self.rater = Backend(
            "rater",
            settings.rater_addr,
            rater_pb2_grpc.RaterServiceStub,
            settings.rater_timeout_seconds,
            size,
            priority=BACKGROUND,
        )

    def close(self) -> None:
        self.tagger.close()
        self.rater.close()

    # ---- tagger ----

    def tagger_model(self) -> TaggerModelInfo:
        reply = self.tagger.stub.GetModelInfo(tagger_pb2.GetModelInfoRequest())
        return TaggerModelInfo(
            reply.model_id,
            float(reply.default_threshold),
            int(reply.label_count),
            reply.features_id,
            per_category=reply.per_category,
        )

    def tag(self, model: TaggerModelInfo, files: Sequence[ImageFile], floor: float, limit: int) -> list[TagList]:
        """Every tag scoring at least ``floor`` (at most ``limit`` per image,
        highest first) for each file, in order, from ``model``. ModelChanged
        when the tagger now runs another model."""
        return self.tag_and_embed(model, files, floor, limit, None).tags

    def tag_and_embed(
        self,
        model: TaggerModelInfo,
        files: Sequence[ImageFile],
        floor: float,
        limit: int,
        extractor: ExtractorInfo | None,
    ) -> TagReply:
        """:meth:`tag`, plus (with ``extractor``) the feature vectors the
        tagger's pass gives, which must be ``extractor``'s: float32
        ``(len(files), dimensions)``. ModelChanged when the tagger now runs
        another model or gives other vectors."""
        request = tagger_pb2.TagRequest(
            images=[common_pb2.ImageFile(data=f.data, filename=f.name) for f in files],
            threshold=None if model.per_category else floor,  # None: the model's own selection
            limit=min(limit, model.label_count) if model.label_count else limit,
            want_features=extractor is not None,
        )
        reply = self.tagger.stub.Tag(request)
        if reply.model_id != model.model_id:
            raise ModelChanged(f"the tagger now runs model {reply.model_id}, not {model.model_id}", "model_changed")
        if len(reply.results) != len(files):
            raise TagrateError(f"the tagger answered {len(reply.results)} results for {len(files)} images")
        tags = [[(tag.name, float(tag.score)) for tag in result.tags] for result in reply.results]
        categories = {tag.name: tag.category for result in reply.results for tag in result.tags if tag.category}
        if extractor is None:
            return TagReply(tags, None, categories)
        if reply.features_id != extractor.extractor_id:
            raise ModelChanged(
                f"the tagger's vectors are now {reply.features_id or 'none'}, not {extractor.extractor_id}",
                "model_changed",
            )
        vectors = _vectors("tagger", [vector.values for vector in reply.features], len(files), extractor)
        return TagReply(tags, vectors, categories)

    # ---- rater ----

    def extractor(self) -> ExtractorInfo:
        reply = self.rater.stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest())
        return ExtractorInfo(reply.extractor_id, int(reply.dimensions))

    def embed(self, extractor: ExtractorInfo, files: Sequence[ImageFile]) -> np.ndarray:
        """Feature vectors from ``extractor``, float32 ``(len(files),
        dimensions)``, in order. ModelChanged when the rater now runs
        another extractor."""
        request = rater_pb2.EmbedRequest(images=[common_pb2.ImageFile(data=f.data, filename=f.name) for f in files])
        reply = self.rater.stub.Embed(request)
        if reply.extractor_id != extractor.extractor_id:
            raise ModelChanged(
                f"the rater now runs extractor {reply.extractor_id}, not {extractor.extractor_id}", "model_changed"
            )
        return _vectors("rater", [vector.values for vector in reply.vectors], len(files), extractor)

    def score_features(
        self, extractor: ExtractorInfo, subjects: Sequence[str], vectors: bytes, count: int
    ) -> list[SubjectScores]:
        """The ratings of ``count`` cached vectors (float32 little-endian
        rows from ``extractor``) by the heads serving ``subjects``; subjects
        no head serves are left out. Conflict when the rater runs another
        extractor."""
        request = rater_pb2.ScoreFeaturesRequest(
            subjects=list(subjects),
            extractor_id=extractor.extractor_id,
            dimensions=extractor.dimensions,
            vectors=vectors,
        )
        reply = self.rater.stub.ScoreFeatures(request)
        answers = []
        for row in reply.subjects:
            scores = np.array(row.scores, dtype=np.float32)
            if scores.shape != (count,):
                raise TagrateError(f"the rater answered {scores.shape} scores for {count} vectors")
            answers.append(SubjectScores(row.subject, row.model, row.model_version, scores))
        return answers


@dataclass(frozen=True)
class SubjectScores:
    subject: str
    model: str  # "personal" | "global"
    model_version: str
    scores: np.ndarray  # float32, one per vector


def _vectors(service: str, values: Sequence[Sequence[float]], count: int, extractor: ExtractorInfo) -> np.ndarray:
    """A service's vectors as float32 ``(count, dimensions)``, checked."""
    if len(values) != count:
        raise TagrateError(f"the {service} answered {len(values)} vectors for {count} images")
    vectors = np.array(values, dtype=np.float32)
    if vectors.shape != (count, extractor.dimensions) or not np.isfinite(vectors).all():
        raise TagrateError(
            f"the {service}'s vectors have shape {vectors.shape}, expected ({count}, {extractor.dimensions}) "
            "finite values"
        )
    return vectors
