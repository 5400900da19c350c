"""Job leases: trainer replicas sharing one jobs table

``training_jobs.owner`` (the replica running the job),
``training_jobs.lease_expires_at`` (until when it holds it) and
``training_jobs.attempts`` (how many replicas started it), and a partial
unique index allowing one running or stopping job per user. Older active
rows of a user that has several (impossible before, but cheap to guard)
are marked failed first, so the index can be built.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_WHERE = "state IN ('running', 'stopping')"
CRASHED_MESSAGE = "the trainer stopped while this job was running"


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    columns = {column["name"] for column in inspector.get_columns("training_jobs")}
    if "owner" not in columns:
        with op.batch_alter_table("training_jobs") as batch:
            batch.add_column(sa.Column("owner", sa.String(100), nullable=True))
            batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
            batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"))
    if any(index["name"] == "uq_training_jobs_active_user" for index in inspector.get_indexes("training_jobs")):
        return
    rows = bind.execute(
        sa.text(f'SELECT id, "user" FROM training_jobs WHERE {ACTIVE_WHERE} ORDER BY started_at DESC, id DESC')
    ).all()
    seen: set[str] = set()
    for job_id, user in rows:
        if user in seen:
            bind.execute(
                sa.text("UPDATE training_jobs SET state = 'failed', error = :error WHERE id = :id"),
                {"error": CRASHED_MESSAGE, "id": job_id},
            )
        seen.add(user)
    op.create_index(
        "uq_training_jobs_active_user",
        "training_jobs",
        ["user"],
        unique=True,
        postgresql_where=sa.text(ACTIVE_WHERE),
        sqlite_where=sa.text(ACTIVE_WHERE),
    )


def downgrade() -> None:
    op.drop_index("uq_training_jobs_active_user", "training_jobs")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("attempts")
        batch.drop_column("lease_expires_at")
        batch.drop_column("owner")
