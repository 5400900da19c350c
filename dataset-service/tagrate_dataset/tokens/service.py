"""The gRPC face of access tokens (``tagrate.dataset.v1.TokenService``), for
the gateway. Only SHA-256 hashes of the secrets reach this service
(``crud.py``)."""

from __future__ import annotations

import logging

import grpc

from tagrate_common.protos import tokens_pb2, tokens_pb2_grpc
from tagrate_common.timestamps import to_timestamp

from ..db import Database
from ..models import AccessToken
from . import crud

log = logging.getLogger(__name__)

# What the server registers: the generated add function and the full service name.
REGISTRATION = (
    tokens_pb2_grpc.add_TokenServiceServicer_to_server,
    tokens_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name,
)


class TokenServicer(tokens_pb2_grpc.TokenServiceServicer):
    """``tagrate.dataset.v1.TokenService``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def CreateToken(self, request: tokens_pb2.CreateTokenRequest, context: grpc.ServicerContext):
        token = self.db.write(
            lambda session: crud.create(
                session, request.token_sha256, request.user, request.admin, request.expires_in_seconds
            )
        )
        log.info("access token created", extra={"token_id": token.id, "user": token.user, "admin": token.admin})
        return _access_token(token)

    def ListTokens(self, request: tokens_pb2.ListTokensRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            return tokens_pb2.ListTokensResponse(tokens=[_access_token(t) for t in crud.list_tokens(session)])

    def RevokeToken(self, request: tokens_pb2.RevokeTokenRequest, context: grpc.ServicerContext):
        self.db.write(lambda session: crud.revoke(session, request.id))
        log.info("access token revoked", extra={"token_id": request.id})
        return tokens_pb2.RevokeTokenResponse()

    def AuthenticateToken(self, request: tokens_pb2.AuthenticateTokenRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            return _access_token(crud.authenticate(session, request.token_sha256))


def _access_token(token: AccessToken) -> tokens_pb2.AccessToken:
    return tokens_pb2.AccessToken(
        id=token.id,
        user=token.user,
        admin=token.admin,
        created_at=to_timestamp(token.created_at),
        expires_at=to_timestamp(token.expires_at) if token.expires_at else None,
    )
