"""API tokens and browser sessions (``tokens/``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlmodel import Field

from .base import DatasetModel, UTCDateTime, _timestamp


class AccessToken(DatasetModel, table=True):
    """A gateway access token: its SHA-256 hash (never the secret), whom it
    acts for, and when it stops working. Revoking deletes the row."""

    __tablename__ = "access_tokens"

    # Public id (DELETE /tokens/{id}); random, unrelated to the secret.
    id: str = Field(sa_type=String(32), primary_key=True)
    # Lowercase hex SHA-256 of the secret: a lookup key for high-entropy
    # tokens (guessing a 128-bit secret is as hard as guessing its hash).
    token_sha256: str = Field(sa_type=String(64), unique=True, nullable=False)
    # NULL for an admin token.
    user: str | None = Field(default=None, sa_type=String(64), nullable=True)
    admin: bool = Field(default=False, nullable=False)
    created_at: datetime = _timestamp()
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class BrowserSession(DatasetModel, table=True):
    """A browser session (the gateway's ``tagrate_session`` cookie): the
    SHA-256 of its random id (never the id), the token it acts for (deleting
    the token deletes its sessions), and when it ends."""

    __tablename__ = "browser_sessions"
    __table_args__ = (Index("ix_browser_sessions_token_id", "token_id"),)

    session_sha256: str = Field(sa_type=String(64), primary_key=True)
    # NULL for a session of the bootstrap admin token (not stored here).
    token_id: str | None = Field(
        default=None,
        sa_type=String(32),
        sa_column_args=[ForeignKey("access_tokens.id", ondelete="CASCADE")],
        nullable=True,
    )
    # SHA-256 of the bootstrap admin token's hash, for such a session; "" otherwise.
    bootstrap_check: str = Field(default="", sa_type=String(64), nullable=False)
    created_at: datetime = _timestamp()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
