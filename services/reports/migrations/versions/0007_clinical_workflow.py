"""Issue 12: users (API keys belong to one; keys made before get their tenant's `admin` user),
reviews (versioned), lesions (jobs.lesion_id), the audit trail (append-only: on PostgreSQL a
trigger refuses UPDATE), the reports' review state, embedding and lesion area, and the tenants'
next steps.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The user the keys made before users act as (services.reports.db.users.DEFAULT_ADMIN_NAME).
_LEGACY_ADMIN_NAME = "admin"


def _timestamp(name: str, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _create_users() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("disabled_at"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_users_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_users_tenant_id_name"),
    )
    op.create_index("ix_users_tenant_id", "users", ["tenant_id"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("user_id", sa.String(64), nullable=True))
        batch.create_foreign_key("fk_api_keys_user_id_users", "users", ["user_id"], ["id"])
        batch.create_index("ix_api_keys_user_id", ["user_id"])


def _backfill_key_users() -> None:
    """Every tenant with keys gets an `admin` user, and its keys act as that user: before users a
    key could do everything its tenant could, which is what `admin` keeps (less signing off)."""
    connection = op.get_bind()
    tenants = connection.execute(sa.text("SELECT DISTINCT tenant_id FROM api_keys")).scalars().all()
    now = datetime.now(UTC)
    for tenant_id in tenants:
        user_id = f"usr_{uuid.uuid4().hex[:16]}"
        connection.execute(
            sa.text(
                "INSERT INTO users (id, tenant_id, name, role, created_at) "
                "VALUES (:id, :tenant_id, :name, 'admin', :now)"
            ),
            {"id": user_id, "tenant_id": tenant_id, "name": _LEGACY_ADMIN_NAME, "now": now},
        )
        connection.execute(
            sa.text("UPDATE api_keys SET user_id = :user_id WHERE tenant_id = :tenant_id"),
            {"user_id": user_id, "tenant_id": tenant_id},
        )


def _create_lesions_and_job_links() -> None:
    op.create_table(
        "lesions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("patient_ref", sa.String(128), nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("body_site", sa.String(64), nullable=True),
        sa.Column("laterality", sa.String(16), nullable=True),
        sa.Column("body_map_view", sa.String(8), nullable=True),
        sa.Column("body_map_x", sa.Float(), nullable=True),
        sa.Column("body_map_y", sa.Float(), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=True),
        _timestamp("created_at", nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_lesions_tenant_id_tenants"),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name="fk_lesions_created_by_users"),
        sa.PrimaryKeyConstraint("id", name="pk_lesions"),
    )
    op.create_index("ix_lesions_tenant_patient", "lesions", ["tenant_id", "patient_ref", "created_at"])
    # Not a batch operation on SQLite: that would copy and drop `jobs`, which reports and
    # deliveries refer to; SQLite's ADD COLUMN takes an inline REFERENCES instead.
    for column, table in (("lesion_id", "lesions"), ("submitted_by", "users")):
        constraint = f"fk_jobs_{column}_{table}"
        if op.get_bind().dialect.name == "sqlite":
            op.execute(
                f"ALTER TABLE jobs ADD COLUMN {column} VARCHAR(64) "
                f"CONSTRAINT {constraint} REFERENCES {table} (id)"
            )
        else:
            op.add_column("jobs", sa.Column(column, sa.String(64), nullable=True))
            op.create_foreign_key(constraint, "jobs", table, [column], ["id"])
    op.add_column("jobs", sa.Column("submitted_by_name", sa.String(128), nullable=True))
    op.create_index("ix_jobs_lesion_created", "jobs", ["lesion_id", "created_at"])


def _create_reviews() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("triage_level", sa.String(16), nullable=False),
        sa.Column("agrees_with_model", sa.Boolean(), nullable=False),
        sa.Column("working_diagnosis_code", sa.String(32), nullable=True),
        sa.Column("working_diagnosis_text", sa.String(256), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("confirmed_diagnosis_code", sa.String(32), nullable=True),
        sa.Column("confirmed_diagnosis_text", sa.String(256), nullable=True),
        sa.Column("confirmed_basis", sa.String(24), nullable=True),
        sa.Column("confirmed_malignant", sa.Boolean(), nullable=True),
        _timestamp("created_at", nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_reviews_tenant_id_tenants"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_reviews_job_id_jobs"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_reviews_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
        sa.UniqueConstraint("job_id", "version", name="uq_reviews_job_id_version"),
    )
    op.create_index("ix_reviews_tenant_created", "reviews", ["tenant_id", "created_at"])
    op.add_column(
        "reports", sa.Column("review_state", sa.String(24), nullable=False, server_default="unreviewed")
    )
    op.add_column("reports", sa.Column("review_version", sa.Integer(), nullable=True))
    op.add_column("reports", _timestamp("reviewed_at"))
    op.add_column("reports", sa.Column("embedding", sa.LargeBinary(), nullable=True))
    op.add_column("reports", sa.Column("lesion_area_fraction", sa.Float(), nullable=True))
    op.add_column("reports", sa.Column("malignant_classes", sa.JSON(), nullable=True))
    op.create_index("ix_reports_tenant_review", "reports", ["tenant_id", "review_state", "triage_level"])
    op.add_column("tenants", sa.Column("next_steps", sa.JSON(), nullable=True))


def _create_audit_events() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        _timestamp("at", nullable=False),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("resource_type", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("user_name", sa.String(128), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(256), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_audit_events_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_tenant_at", "audit_events", ["tenant_id", "at", "id"])
    op.create_index(
        "ix_audit_events_tenant_resource", "audit_events", ["tenant_id", "resource_type", "resource_id"]
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    if op.get_bind().dialect.name == "postgresql":
        # Append-only below the API too: no UPDATE, whoever asks (DELETE stays for the purge).
        op.execute(
            "CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
        )


def upgrade() -> None:
    """New tables, a backfill of the keys' users, and nullable (or defaulted) columns."""
    _create_users()
    _backfill_key_users()
    _create_lesions_and_job_links()
    _create_reviews()
    _create_audit_events()


def downgrade() -> None:
    """Everything above, dropped in reverse order."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    op.drop_table("audit_events")
    op.drop_column("tenants", "next_steps")
    op.drop_index("ix_reports_tenant_review", table_name="reports")
    with op.batch_alter_table("reports") as batch:
        for column in (
            "malignant_classes",
            "lesion_area_fraction",
            "embedding",
            "reviewed_at",
            "review_version",
            "review_state",
        ):
            batch.drop_column(column)
    op.drop_table("reviews")
    op.drop_index("ix_jobs_lesion_created", table_name="jobs")
    op.drop_column("jobs", "submitted_by_name")
    for column, table in (("lesion_id", "lesions"), ("submitted_by", "users")):
        if op.get_bind().dialect.name == "sqlite":
            # SQLite (3.35+) drops a column that only a column-level REFERENCES constrains.
            op.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        else:
            op.drop_constraint(f"fk_jobs_{column}_{table}", "jobs", type_="foreignkey")
            op.drop_column("jobs", column)
    op.drop_table("lesions")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_user_id")
        batch.drop_constraint("fk_api_keys_user_id_users", type_="foreignkey")
        batch.drop_column("user_id")
    op.drop_table("users")
