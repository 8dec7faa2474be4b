"""jobs.enqueued_at, jobs.lease_expires_at and jobs.redrives, for the sweeper (issue 10).

enqueued_at is backfilled from created_at (every existing job was queued when registered) and
stays nullable: making it NOT NULL would make SQLite copy the jobs table, which the reports
table's foreign key forbids. Running jobs get no lease, so the sweeper leaves them to their broker
message as before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the columns (plain ADD COLUMN on both backends), fill enqueued_at, add the indexes."""
    op.add_column("jobs", sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("redrives", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE jobs SET enqueued_at = created_at")
    op.create_index("ix_jobs_status_enqueued", "jobs", ["status", "enqueued_at"])
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_expires_at"])


def downgrade() -> None:
    """Drop the indexes and columns (SQLite copies the table: batch mode)."""
    op.drop_index("ix_jobs_status_lease", table_name="jobs")
    op.drop_index("ix_jobs_status_enqueued", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("redrives")
        batch.drop_column("lease_expires_at")
        batch.drop_column("enqueued_at")
