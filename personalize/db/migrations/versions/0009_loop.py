"""Night after night: a planned track may be written for one listener (``track_plans.listener_id``), and
the simulated world's closed loop keeps one row per night it has run (``loop_nights``), so a stopped loop
continues where it stopped.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("track_plans") as batch:
        batch.add_column(sa.Column("listener_id", sa.String(64)))
    op.create_table(
        "loop_nights",
        sa.Column("run_date", sa.Date, primary_key=True),
        sa.Column("world_tag", sa.String(40), nullable=False),
        sa.Column("night", sa.Integer, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("metrics", sa.JSON),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("loop_nights")
    # A plain DROP COLUMN (SQLite 3.35+ and PostgreSQL): a batch rebuild of the table would trip the views
    # that read track_plans.
    op.drop_column("track_plans", "listener_id")
