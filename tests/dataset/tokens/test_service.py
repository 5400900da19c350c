"""The dataset service's access-token RPCs on SQLite and PostgreSQL: only
hashes are stored, revoked and expired tokens stop authenticating, and the
token comparison is constant-time."""

from __future__ import annotations

import hashlib
import inspect
import secrets
import time

import grpc
from sqlalchemy import text

from tagrate_common.protos import tokens_pb2
from tagrate_dataset.tokens import crud as tokens
from tests.dataset.conftest import rpc_error


def _secret() -> tuple[str, str]:
    secret = secrets.token_urlsafe(32)
    return secret, hashlib.sha256(secret.encode()).hexdigest()


def test_create_authenticate_list_revoke(served) -> None:
    secret, digest = _secret()
    made = served.stub.tokens.CreateToken(tokens_pb2.CreateTokenRequest(token_sha256=digest, user="alice"))
    assert made.user == "alice" and not made.admin and not made.HasField("expires_at") and made.id
    admin_secret, admin_digest = _secret()
    admin = served.stub.tokens.CreateToken(
        tokens_pb2.CreateTokenRequest(token_sha256=admin_digest, admin=True, expires_in_seconds=3600)
    )
    assert admin.admin and not admin.HasField("user") and admin.HasField("expires_at")

    found = served.stub.tokens.AuthenticateToken(tokens_pb2.AuthenticateTokenRequest(token_sha256=digest))
    assert (found.id, found.user, found.admin) == (made.id, "alice", False)
    listed = served.stub.tokens.ListTokens(tokens_pb2.ListTokensRequest()).tokens
    assert {t.id for t in listed} == {made.id, admin.id}

    # Only hashes in the database: neither secret appears in any column.
    with served.engine.connect() as conn:
        rows = [tuple(map(str, row)) for row in conn.execute(text("SELECT * FROM access_tokens"))]
    flat = " ".join(" ".join(row) for row in rows)
    assert secret not in flat and admin_secret not in flat
    assert digest in flat and admin_digest in flat

    served.stub.tokens.RevokeToken(tokens_pb2.RevokeTokenRequest(id=made.id))
    code, error_code, _ = rpc_error(
        served.stub.tokens.AuthenticateToken, tokens_pb2.AuthenticateTokenRequest(token_sha256=digest)
    )
    assert (code, error_code) == (grpc.StatusCode.NOT_FOUND, "unknown_token")
    code, _, _ = rpc_error(served.stub.tokens.RevokeToken, tokens_pb2.RevokeTokenRequest(id=made.id))
    assert code == grpc.StatusCode.NOT_FOUND


def test_expired_token_does_not_authenticate(served) -> None:
    _, digest = _secret()
    served.stub.tokens.CreateToken(tokens_pb2.CreateTokenRequest(token_sha256=digest, user="bob", expires_in_seconds=1))
    served.stub.tokens.AuthenticateToken(tokens_pb2.AuthenticateTokenRequest(token_sha256=digest))
    time.sleep(1.1)
    code, _, _ = rpc_error(
        served.stub.tokens.AuthenticateToken, tokens_pb2.AuthenticateTokenRequest(token_sha256=digest)
    )
    assert code == grpc.StatusCode.NOT_FOUND


def test_refused_requests_store_nothing(served) -> None:
    before = served.state()
    _, digest = _secret()
    bad = [
        tokens_pb2.CreateTokenRequest(token_sha256="not-a-hash", user="alice"),
        tokens_pb2.CreateTokenRequest(token_sha256=digest.upper(), user="alice"),
        tokens_pb2.CreateTokenRequest(token_sha256=digest),  # neither a user nor admin
        tokens_pb2.CreateTokenRequest(token_sha256=digest, user="alice", admin=True),
        tokens_pb2.CreateTokenRequest(token_sha256=digest, user="all"),
        tokens_pb2.CreateTokenRequest(token_sha256=digest, user="alice", expires_in_seconds=10**12),
    ]
    for request in bad:
        code, _, _ = rpc_error(served.stub.tokens.CreateToken, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, request
    with served.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM access_tokens")).scalar_one() == 0
    assert served.state() == before


def test_hash_comparison_is_constant_time() -> None:
    assert "hmac.compare_digest(" in inspect.getsource(tokens.authenticate)
