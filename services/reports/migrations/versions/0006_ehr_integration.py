"""Issue 11: webhook_endpoints, fhir_endpoints and deliveries (the outbox the dispatcher sends
from), reports.class_display_names, jobs.dicom, and jobs.lease_owner (issue 10: a lease has an
owner, so two messages for one job never both run it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Three new tables and one nullable column (plain ADD COLUMN on both backends)."""
    op.add_column("reports", sa.Column("class_display_names", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("dicom", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("lease_owner", sa.String(255), nullable=True))
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(256), nullable=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("previous_secret", sa.String(128), nullable=True),
        _timestamp("previous_secret_expires_at"),
        _timestamp("created_at", nullable=False),
        _timestamp("removed_at"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_webhook_endpoints_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
    )
    op.create_index("ix_webhook_endpoints_tenant_id", "webhook_endpoints", ["tenant_id"])
    op.create_table(
        "fhir_endpoints",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("base_url", sa.String(2048), nullable=False),
        sa.Column("token_url", sa.String(2048), nullable=False),
        sa.Column("client_id", sa.String(256), nullable=False),
        sa.Column("scope", sa.String(1024), nullable=False),
        sa.Column("algorithm", sa.String(8), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_fhir_endpoints_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_fhir_endpoints"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("webhook_id", sa.String(64), nullable=True),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("next_attempt_at"),
        _timestamp("delivered_at"),
        _timestamp("give_up_at", nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_deliveries_tenant_id_tenants"),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhook_endpoints.id"], name="fk_deliveries_webhook_id_webhook_endpoints"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_deliveries_job_id_jobs"),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], name="fk_deliveries_batch_id_batches"),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("dedupe_key", name="uq_deliveries_dedupe_key"),
    )
    op.create_index("ix_deliveries_status_next", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_tenant_job", "deliveries", ["tenant_id", "job_id", "created_at"])
    op.create_index("ix_deliveries_webhook_created", "deliveries", ["webhook_id", "created_at"])


def downgrade() -> None:
    """Drop the tables (deliveries first: it refers to the others) and the column."""
    op.drop_table("deliveries")
    op.drop_table("fhir_endpoints")
    op.drop_index("ix_webhook_endpoints_tenant_id", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("class_display_names")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_owner")
        batch.drop_column("dicom")
