"""reports.heatmap_source: the class-activation map a heatmap PNG is rendered from on first request.

Nullable, no default: reports stored before it keep their ready-made heatmap_png.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column."""
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("heatmap_source", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    """Drop the column (SQLite copies the table: batch mode)."""
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("heatmap_source")
