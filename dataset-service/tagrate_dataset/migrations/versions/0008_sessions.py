"""Browser sessions

``browser_sessions``: the gateway's cookie sessions, stored as the SHA-256
of their random ids, each tied to the access token it was started with
(``ON DELETE CASCADE``: revoking a token ends its sessions; NULL for the
bootstrap admin token, which is not stored) and ending at ``expires_at``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "browser_sessions",
        sa.Column("session_sha256", sa.String(64), nullable=False),
        sa.Column("token_id", sa.String(32), nullable=True),
        sa.Column("bootstrap_check", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["access_tokens.id"],
            name="fk_browser_sessions_token_id_access_tokens",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_sha256", name="pk_browser_sessions"),
    )
    op.create_index("ix_browser_sessions_token_id", "browser_sessions", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_browser_sessions_token_id", table_name="browser_sessions")
    op.drop_table("browser_sessions")
