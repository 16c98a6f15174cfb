"""Taste profiles, clusters and the per-date taste run (scaler, choice of k).

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
        sa.Column("weight_total", sa.Float, nullable=False),
        sa.Column("tempo_bpm", sa.Float),
        sa.Column("tempo_spread", sa.Float),
        sa.Column("key_pc", sa.Integer),
        sa.Column("mode", sa.String(5)),
        sa.Column("key_name", sa.String(12)),
        sa.Column("major_share", sa.Float),
        sa.Column("top_families", sa.String(200)),
        sa.Column("density", sa.Float),
        sa.Column("density_spread", sa.Float),
        sa.Column("vector", sa.JSON),
        sa.Column("key_weights", sa.JSON),
        sa.Column("program_weights", sa.JSON),
        sa.Column("meter_weights", sa.JSON),
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
        sa.Column("n_profiled", sa.Integer, nullable=False),
        sa.Column("tempo_bpm", sa.Float, nullable=False),
        sa.Column("key_pc", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(5), nullable=False),
        sa.Column("key_name", sa.String(12), nullable=False),
        sa.Column("top_families", sa.String(200), nullable=False),
        sa.Column("density", sa.Float, nullable=False),
        sa.Column("silhouette", sa.Float),
        sa.Column("is_new", sa.Boolean, nullable=False),
        sa.Column("match_distance", sa.Float),
        sa.Column("centroid", sa.JSON, nullable=False),
        sa.Column("quality", sa.JSON),
        sa.UniqueConstraint("run_date", "cluster_id", name="uq_clusters_date_cluster"),
    )
    op.create_index("ix_clusters_run_date", "clusters", ["run_date"])
    op.create_table(
        "taste_runs",
        sa.Column("run_date", sa.Date, primary_key=True),
        sa.Column("feature_names", sa.JSON, nullable=False),
        sa.Column("scaler_mean", sa.JSON, nullable=False),
        sa.Column("scaler_scale", sa.JSON, nullable=False),
        sa.Column("feature_weights", sa.JSON, nullable=False),
        sa.Column("k", sa.Integer, nullable=False),
        sa.Column("k_criterion", sa.String(40), nullable=False),
        sa.Column("k_scores", sa.JSON, nullable=False),
        sa.Column("n_listeners", sa.Integer, nullable=False),
        sa.Column("n_profiled", sa.Integer, nullable=False),
        sa.Column("n_thin", sa.Integer, nullable=False),
        sa.Column("n_cold", sa.Integer, nullable=False),
        sa.Column("previous_date", sa.Date),
        sa.Column("n_new_clusters", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("taste_runs")
    op.drop_index("ix_clusters_run_date", table_name="clusters")
    op.drop_table("clusters")
    op.drop_index("ix_taste_profiles_run_date", table_name="taste_profiles")
    op.drop_table("taste_profiles")
