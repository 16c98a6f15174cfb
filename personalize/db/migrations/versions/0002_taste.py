"""Taste profiles and clusters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "taste_profiles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("listener_id", sa.String(64), sa.ForeignKey("listeners.listener_id"), nullable=False),
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n_events", sa.Integer, nullable=False),
        sa.Column("tempo_bpm", sa.Float),
        sa.Column("tempo_spread", sa.Float),
        sa.Column("key_pc", sa.Integer),
        sa.Column("mode", sa.String(5)),
        sa.Column("key_name", sa.String(12)),
        sa.Column("major_share", sa.Float),
        sa.Column("top_families", sa.String(200)),
        sa.Column("density", sa.Float),
        sa.Column("vector", sa.JSON),
        sa.Column("cluster_id", sa.Integer),
        sa.UniqueConstraint("listener_id", "run_date", name="uq_taste_profiles_listener_date"),
    )
    op.create_index("ix_taste_profiles_run_date", "taste_profiles", ["run_date"])
    op.create_table(
        "clusters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("cluster_id", sa.Integer, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("tempo_bpm", sa.Float, nullable=False),
        sa.Column("key_pc", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(5), nullable=False),
        sa.Column("key_name", sa.String(12), nullable=False),
        sa.Column("top_families", sa.String(200), nullable=False),
        sa.Column("density", sa.Float, nullable=False),
        sa.Column("centroid", sa.JSON, nullable=False),
        sa.Column("quality", sa.JSON),
        sa.UniqueConstraint("run_date", "cluster_id", name="uq_clusters_date_cluster"),
    )
    op.create_index("ix_clusters_run_date", "clusters", ["run_date"])


def downgrade() -> None:
    op.drop_index("ix_clusters_run_date", table_name="clusters")
    op.drop_table("clusters")
    op.drop_index("ix_taste_profiles_run_date", table_name="taste_profiles")
    op.drop_table("taste_profiles")
