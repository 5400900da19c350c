"""A tagger that dies on a poison image: ``python -m tests.dataset.crashing_tagger
PORT STATE_DIR``. A real gRPC server in its own process, speaking the tagger's
protocol with a fixed answer (one tag per image), that exits at once, as an
OOM kill would, when a Tag request carries an image named in
``STATE_DIR/poison``; each such death is first recorded as a line in
``STATE_DIR/crashes``. The test that runs it restarts it, like a supervisor."""

from __future__ import annotations

import os
import sys
from concurrent import futures
from pathlib import Path

import grpc

from tagrate_common.protos import tagger_pb2, tagger_pb2_grpc

MODEL_ID = "crashing-tagger@1"


class CrashingTagger(tagger_pb2_grpc.TaggerServiceServicer):
    def __init__(self, state: Path) -> None:
        self.state = state

    def GetModelInfo(self, request, context):
        return tagger_pb2.ModelInfo(model_id=MODEL_ID, architecture="fixed", default_threshold=0.5, label_count=1)

    def Tag(self, request, context):
        poison_file = self.state / "poison"
        poison = set(poison_file.read_text().split()) if poison_file.exists() else set()
        for image in request.images:
            if image.filename in poison:
                with (self.state / "crashes").open("a") as crashes:
                    crashes.write(image.filename + "\n")
                os._exit(70)  # no cleanup, no answer: the caller sees the connection drop
        tags = tagger_pb2.ImageTags(tags=[tagger_pb2.TagScore(name="cat", score=0.9)])
        return tagger_pb2.TagResponse(model_id=MODEL_ID, results=[tags for _ in request.images])


def main() -> None:
    port, state = int(sys.argv[1]), Path(sys.argv[2])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    tagger_pb2_grpc.add_TaggerServiceServicer_to_server(CrashingTagger(state), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
