"""api_keys.expires_at (optional end of validity) and api_keys.last_used_at.

Nullable, no default: existing keys never expire and have not been seen used since.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the columns."""
    with op.batch_alter_table("api_keys") as batch:
        # As every timestamp (0001): timestamptz on PostgreSQL, naive-UTC text on SQLite.
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop the columns (SQLite copies the table: batch mode)."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
