"""Foundation: listeners, tracks, listening events, quarantined rows, pipeline runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "listeners",
        sa.Column("listener_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "tracks",
        sa.Column("track_id", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("tempo_bpm", sa.Float, nullable=False),
        sa.Column("key_pc", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(5), nullable=False),
        sa.Column("meter", sa.String(8), nullable=False),
        sa.Column("programs", sa.String(200), nullable=False),
        sa.Column("density", sa.Float),
        sa.Column("run_date", sa.Date),
        sa.Column("cluster_id", sa.Integer),
        sa.Column("model_version", sa.String(100)),
        sa.Column("conditioning", sa.JSON),
        sa.Column("measured", sa.JSON),
        sa.Column("midi_uri", sa.String(500)),
        sa.Column("audio_uri", sa.String(500)),
        sa.Column("audio_sha256", sa.String(64)),
        sa.Column("audio_bytes", sa.BigInteger),
        sa.Column("audio_codec", sa.String(16)),
        sa.Column("loudness_lufs", sa.Float),
        sa.Column("true_peak_dbtp", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_tracks_run_date", "tracks", ["run_date"])
    op.create_table(
        "listening_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("listener_id", sa.String(64), sa.ForeignKey("listeners.listener_id"), nullable=False),
        sa.Column("track_id", sa.String(64), sa.ForeignKey("tracks.track_id"), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ms_played", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("source", sa.String(300)),
    )
    op.create_index("ix_listening_events_listener_ts", "listening_events", ["listener_id", "ts"])
    op.create_index("ix_listening_events_ts", "listening_events", ["ts"])
    op.create_table(
        "quarantined_rows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("row_number", sa.BigInteger, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("run_date", sa.Date),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("source", "row_number", name="uq_quarantined_source_row"),
    )
    op.create_index("ix_quarantined_rows_reason", "quarantined_rows", ["reason"])
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("stage", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_s", sa.Float),
        sa.Column("counts", sa.JSON),
        sa.Column("detail", sa.Text),
        sa.UniqueConstraint("run_date", "stage", name="uq_pipeline_runs_date_stage"),
    )


def downgrade() -> None:
    op.drop_table("pipeline_runs")
    op.drop_index("ix_quarantined_rows_reason", table_name="quarantined_rows")
    op.drop_table("quarantined_rows")
    op.drop_index("ix_listening_events_ts", table_name="listening_events")
    op.drop_index("ix_listening_events_listener_ts", table_name="listening_events")
    op.drop_table("listening_events")
    op.drop_index("ix_tracks_run_date", table_name="tracks")
    op.drop_table("tracks")
    op.drop_table("listeners")
