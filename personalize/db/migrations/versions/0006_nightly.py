"""The nightly run: the generation plan per date and cluster (asked vs measured), and the analyst views
over generation, control fidelity, playlist coverage and engagement (``sql/views/``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from personalize.db.views import view_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NIGHTLY_VIEWS = (
    "v_generation_daily",
    "v_fidelity_by_cluster",
    "v_playlist_coverage",
    "v_engagement_by_source",
)


def upgrade() -> None:
    op.create_table(
        "track_plans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("cluster_id", sa.Integer, nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("controls", sa.JSON, nullable=False),
        sa.Column("tempo_bpm", sa.Float, nullable=False),
        sa.Column("key_pc", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(5), nullable=False),
        sa.Column("meter", sa.String(8), nullable=False),
        sa.Column("programs", sa.String(200), nullable=False),
        sa.Column("density", sa.Float),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("track_id", sa.String(64), sa.ForeignKey("tracks.track_id")),
        sa.Column("attempts", sa.Integer),
        sa.Column("measured_tempo_bpm", sa.Float),
        sa.Column("measured_key_pc", sa.Integer),
        sa.Column("measured_mode", sa.String(5)),
        sa.Column("measured_programs", sa.String(200)),
        sa.Column("measured_density", sa.Float),
        sa.Column("in_range_share", sa.Float),
        sa.Column("key_ok", sa.Boolean),
        sa.Column("tempo_ok", sa.Boolean),
        sa.Column("programs_ok", sa.Boolean),
        sa.Column("density_ok", sa.Boolean),
        sa.Column("detail", sa.Text),
        sa.UniqueConstraint("run_date", "cluster_id", "slot", name="uq_track_plans_date_cluster_slot"),
    )
    op.create_index("ix_track_plans_run_date", "track_plans", ["run_date"])
    op.create_index("ix_playlist_items_track", "playlist_items", ["track_id"])
    op.create_index("ix_tracks_source_run_date", "tracks", ["source", "run_date"])
    dialect = op.get_bind().dialect.name
    for name in NIGHTLY_VIEWS:
        op.execute(view_sql(name, dialect))


def downgrade() -> None:
    for name in reversed(NIGHTLY_VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index("ix_tracks_source_run_date", table_name="tracks")
    op.drop_index("ix_playlist_items_track", table_name="playlist_items")
    op.drop_index("ix_track_plans_run_date", table_name="track_plans")
    op.drop_table("track_plans")
