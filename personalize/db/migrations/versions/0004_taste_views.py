"""Analyst views on taste profiles and clusters, created from ``sql/views/<name>.sql``.

A file ``sql/views/<name>.<dialect>.sql`` (e.g. ``.postgresql.sql``) replaces the portable one on that
engine when a view cannot be written in SQL both engines accept.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from alembic import op

from personalize.db.views import view_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TASTE_VIEWS = ("v_cluster_summary", "v_listener_taste", "v_cluster_moves", "v_cluster_flows")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in TASTE_VIEWS:
        op.execute(view_sql(name, dialect))


def downgrade() -> None:
    for name in reversed(TASTE_VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
