"""Original names

``images.original_filename`` is an image's original name (the first file
name it was stored under, shown by /getimagetags and the UI and used by
``tagrate export``). Names used to be stored as the client sent them, path
and all (``C:\\photos\\cat.jpg``, ``../cat.jpg``): this keeps only the
last path part of every stored name, trimmed, as uploads now store them.
Data only; the column is unchanged.

Revision ID: 0012
Revises: 0010 (0011 is unused)
Create Date: 2026-12-07
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEPARATORS = re.compile(r"[/\\]")
_BATCH = 1000


def _last_part(name: str) -> str:
    """The same rule as ``checks.clean_filename`` for a name that was
    already printable and at most 255 characters (frozen here: a migration
    must not change when the application's code does)."""
    base = _SEPARATORS.split(name)[-1].strip()
    return "" if base in (".", "..") else base


def upgrade() -> None:
    conn = op.get_bind()
    images = sa.table("images", sa.column("id", sa.Integer), sa.column("original_filename", sa.String))
    has_path = sa.or_(images.c.original_filename.contains("/", autoescape=True), images.c.original_filename.contains("\\", autoescape=True))
    last_id = 0
    while True:
        # Batches by id: bounded memory on a large library; only the rows with a path are read.
        rows = conn.execute(
            sa.select(images.c.id, images.c.original_filename)
            .where(has_path, images.c.id > last_id)
            .order_by(images.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            images.update().where(images.c.id == sa.bindparam("image_id")).values(original_filename=sa.bindparam("name")),
            [{"image_id": image_id, "name": _last_part(name)} for image_id, name in rows],
        )
        last_id = rows[-1][0]


def downgrade() -> None:
    # The folders were dropped: nothing to restore.
    pass
