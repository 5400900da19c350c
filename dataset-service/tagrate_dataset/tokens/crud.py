"""Access tokens of the gateway, stored as SHA-256 hashes: plain functions
that take a Session (transactions are the caller's, see :class:`db.Database`).

The gateway makes each token's random secret (at least 128 bits), shows it
once and hands this service only its hash; a token is looked up by that hash
and compared once more in constant time (:func:`hmac.compare_digest`), so a
row's hash never decides a comparison by how many leading characters match.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session, col, delete, select

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument, NotFound

from ..models import AccessToken, BrowserSession, utc_now

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
TOKEN_ID_RE = re.compile(r"[0-9a-f]{1,32}")
# Ten years: a bound that keeps expires_at representable everywhere.
MAX_EXPIRES_IN_SECONDS = 10 * 365 * 24 * 3600
# Public ids: 64 random bits, never derived from the secret.
ID_BYTES = 8


def token_hash(value: str) -> str:
    """The hash as given, when it is lowercase hex SHA-256; else 400."""
    if not _SHA256_RE.fullmatch(value):
        raise InvalidArgument("token_sha256 must be 64 lowercase hex digits", "invalid_token_hash")
    return value


def create(session: Session, sha256: str, user: str, admin: bool, expires_in_seconds: int) -> AccessToken:
    """Stores a new token for ``user`` (a valid user name) or, with
    ``admin``, an admin token (then ``user`` must be empty)."""
    digest = token_hash(sha256)
    if admin == bool(user):
        raise InvalidArgument("a token is either for a user or admin, exactly one of them", "invalid_token_scope")
    name = validation.user_name(user) if user else None
    if expires_in_seconds > MAX_EXPIRES_IN_SECONDS:
        raise InvalidArgument(f"expires_in must be at most {MAX_EXPIRES_IN_SECONDS} seconds", "invalid_expires_in")
    now = utc_now()
    expires_at = now + timedelta(seconds=expires_in_seconds) if expires_in_seconds else None
    token = AccessToken(
        id=secrets.token_hex(ID_BYTES),
        token_sha256=digest,
        user=name,
        admin=admin,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return token


def list_tokens(session: Session) -> list[AccessToken]:
    """Every stored token, oldest first (ties by id)."""
    return list(session.exec(select(AccessToken).order_by(AccessToken.created_at, AccessToken.id)).all())


def revoke(session: Session, token_id: str) -> None:
    """Deletes the token; 404 for an unknown id."""
    # An id is 16 hex digits; anything else (a NUL byte, other text) names no
    # token, on every database (PostgreSQL refuses NUL in text: a 500 before).
    token = session.get(AccessToken, token_id) if TOKEN_ID_RE.fullmatch(token_id) else None
    if token is None:
        raise NotFound(f"there is no token with id {token_id[:40]!r}", "unknown_token")
    # Its browser sessions end with it (the foreign key cascades as well).
    session.execute(delete(BrowserSession).where(col(BrowserSession.token_id) == token_id))
    session.delete(token)


def authenticate(session: Session, sha256: str, now: datetime | None = None) -> AccessToken:
    """The unexpired token whose secret hashes to ``sha256``; 404 otherwise
    (unknown, revoked and expired look the same to the caller)."""
    digest = token_hash(sha256)
    token = session.exec(select(AccessToken).where(AccessToken.token_sha256 == digest)).first()
    if token is None or not hmac.compare_digest(token.token_sha256, digest):
        raise NotFound("unknown token", "unknown_token")
    if token.expires_at is not None and token.expires_at <= (now or utc_now()):
        raise NotFound("unknown token", "unknown_token")
    return token
