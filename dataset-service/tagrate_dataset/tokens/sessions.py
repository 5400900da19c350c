"""Browser sessions of the gateway (``tagrate.dataset.v1.SessionService``).

The gateway's ``tagrate_session`` cookie holds a random session id; this
service stores only its SHA-256. A session acts for the access token it was
started with and ends with it (the foreign key cascades, and
:func:`tokens.crud.revoke` deletes them too), at /logout, or when it
expires. Expired sessions are swept when a new one is created, so the table
holds live sessions only (bounded by the logins within the longest
session lifetime).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import grpc
from sqlmodel import Session, col, delete, select

from tagrate_common.errors import InvalidArgument, NotFound
from tagrate_common.protos import sessions_pb2, sessions_pb2_grpc
from tagrate_common.timestamps import to_timestamp

from ..db import Database
from ..models import AccessToken, BrowserSession, utc_now
from .crud import TOKEN_ID_RE, token_hash

log = logging.getLogger(__name__)

REGISTRATION = (
    sessions_pb2_grpc.add_SessionServiceServicer_to_server,
    sessions_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
)
# A session never outlives this, whatever its token allows.
MAX_SESSION_SECONDS = 30 * 24 * 3600
# Live sessions one token may have; a new login beyond this ends the oldest
# (the table stays bounded however often a valid token logs in).
MAX_SESSIONS_PER_TOKEN = 100
_UNKNOWN = "unknown or ended session"


def create(
    session: Session, sha256: str, token_id: str, bootstrap_check: str, max_age_seconds: int
) -> tuple[BrowserSession, AccessToken | None]:
    digest = token_hash(sha256)
    now = utc_now()
    session.execute(delete(BrowserSession).where(col(BrowserSession.expires_at) <= now))
    seconds = min(max_age_seconds or MAX_SESSION_SECONDS, MAX_SESSION_SECONDS)
    expires_at = now + timedelta(seconds=seconds)
    token: AccessToken | None = None
    if token_id:
        token = session.get(AccessToken, token_id) if TOKEN_ID_RE.fullmatch(token_id) else None
        if token is None or (token.expires_at is not None and token.expires_at <= now):
            raise NotFound(f"there is no live token with id {token_id[:40]!r}", "unknown_token")
        if token.expires_at is not None:
            expires_at = min(expires_at, token.expires_at)
        bootstrap_check = ""
    elif not bootstrap_check:
        raise InvalidArgument("a session needs a token_id or a bootstrap_check", "invalid_session")
    else:
        bootstrap_check = token_hash(bootstrap_check)
    _end_oldest(session, token_id or None, bootstrap_check)
    row = BrowserSession(
        session_sha256=digest, token_id=token_id or None, bootstrap_check=bootstrap_check, expires_at=expires_at
    )
    session.add(row)
    session.flush()
    return row, token


def _end_oldest(session: Session, token_id: str | None, bootstrap_check: str) -> None:
    """Ends the oldest sessions of the same token beyond MAX_SESSIONS_PER_TOKEN - 1."""
    same = (
        col(BrowserSession.token_id) == token_id
        if token_id is not None
        else (col(BrowserSession.token_id).is_(None) & (col(BrowserSession.bootstrap_check) == bootstrap_check))
    )
    keep = (
        select(BrowserSession.session_sha256)
        .where(same)
        .order_by(col(BrowserSession.created_at).desc(), col(BrowserSession.session_sha256))
        .limit(MAX_SESSIONS_PER_TOKEN - 1)
    )
    kept = set(session.exec(keep).all())
    if len(kept) < MAX_SESSIONS_PER_TOKEN - 1:
        return
    session.execute(delete(BrowserSession).where(same, col(BrowserSession.session_sha256).not_in(kept)))


def authenticate(session: Session, sha256: str) -> tuple[BrowserSession, AccessToken | None]:
    digest = token_hash(sha256)
    now = utc_now()
    row = session.get(BrowserSession, digest)
    if row is None or row.expires_at <= now:
        raise NotFound(_UNKNOWN, "unknown_session")
    token = None
    if row.token_id is not None:
        token = session.get(AccessToken, row.token_id)
        if token is None or (token.expires_at is not None and token.expires_at <= now):
            raise NotFound(_UNKNOWN, "unknown_session")
    return row, token


def remove(session: Session, sha256: str) -> None:
    session.execute(delete(BrowserSession).where(col(BrowserSession.session_sha256) == token_hash(sha256)))


def remove_for_token(session: Session, token_id: str) -> None:
    session.execute(delete(BrowserSession).where(col(BrowserSession.token_id) == token_id))


def _message(row: BrowserSession, token: AccessToken | None) -> sessions_pb2.BrowserSession:
    reply = sessions_pb2.BrowserSession(
        admin=token.admin if token is not None else True,
        created_at=to_timestamp(row.created_at),
        expires_at=to_timestamp(row.expires_at),
        bootstrap_check=row.bootstrap_check,
    )
    if token is not None:
        reply.token_id = token.id
        if token.user is not None:
            reply.user = token.user
    return reply


class SessionServicer(sessions_pb2_grpc.SessionServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    def CreateSession(self, request: sessions_pb2.CreateSessionRequest, context: grpc.ServicerContext):
        row, token = self.db.write(
            lambda s: create(
                s, request.session_sha256, request.token_id, request.bootstrap_check, request.max_age_seconds
            )
        )
        log.info("browser session started", extra={"token_id": row.token_id or "(bootstrap admin)"})
        return _message(row, token)

    def AuthenticateSession(self, request: sessions_pb2.AuthenticateSessionRequest, context: grpc.ServicerContext):
        with self.db.read() as s:
            return _message(*authenticate(s, request.session_sha256))

    def DeleteSession(self, request: sessions_pb2.DeleteSessionRequest, context: grpc.ServicerContext):
        self.db.write(lambda s: remove(s, request.session_sha256))
        return sessions_pb2.DeleteSessionResponse()
