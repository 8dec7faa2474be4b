"""reports.metadata_used: the clinical fields a format-2 model fused into the prediction.

Nullable, no default: reports stored before it (all from image-only models) read as NULL, which
the contract (`Prediction.metadata_used`) defines as "an image-only model".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column."""
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("metadata_used", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the column (SQLite copies the table: batch mode)."""
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("metadata_used")
