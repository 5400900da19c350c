"""The dataset service's process over real gRPC: every resource's service
registered on one port, and its health."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import (
    albums_pb2,
    images_pb2,
    library_pb2,
    owned_tags_pb2,
    ratings_pb2,
    sessions_pb2,
    similar_pb2,
    tags_pb2,
    tasteloop_pb2,
    tokens_pb2,
    training_data_pb2,
    users_pb2,
    work_pb2,
)
from tests.dataset.conftest import Served
from tests.support import health_status

# Every proto file of the dataset service and the one service it defines.
RESOURCE_PROTOS = [
    images_pb2,
    ratings_pb2,
    library_pb2,
    tags_pb2,
    work_pb2,
    users_pb2,
    training_data_pb2,
    tokens_pb2,
    albums_pb2,
    tasteloop_pb2,
    sessions_pb2,
    similar_pb2,
    owned_tags_pb2,
]


def test_health_is_serving(served: Served) -> None:
    assert health_status(served.target) == "SERVING"


def test_every_resource_service_is_served_on_the_one_port(served: Served) -> None:
    services = [service for protos in RESOURCE_PROTOS for service in protos.DESCRIPTOR.services_by_name.values()]
    # One service per file, and a client stub for each (DatasetStubs' annotated attributes).
    assert len(services) == len(RESOURCE_PROTOS) == len(DatasetStubs.__annotations__)
    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in services:
            reply = health.Check(health_pb2.HealthCheckRequest(service=service.full_name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service.full_name
            for method in service.methods:
                # An empty request reaches every method's servicer (an unregistered
                # one would be UNIMPLEMENTED); most refuse it as incomplete.
                call = channel.unary_unary(f"/{service.full_name}/{method.name}")
                if method.server_streaming:
                    call = channel.unary_stream(f"/{service.full_name}/{method.name}")
                try:
                    result = call(b"", timeout=10)
                    if method.server_streaming:
                        list(result)
                except grpc.RpcError as exc:
                    assert exc.code() != grpc.StatusCode.UNIMPLEMENTED, f"{service.full_name}/{method.name}"
