"""Playlists, playlist items and API keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "playlists",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("listener_id", sa.String(64), sa.ForeignKey("listeners.listener_id"), nullable=False),
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("listener_id", "run_date", name="uq_playlists_listener_date"),
    )
    op.create_index("ix_playlists_run_date", "playlists", ["run_date"])
    op.create_table(
        "playlist_items",
        sa.Column(
            "playlist_id", sa.Integer, sa.ForeignKey("playlists.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("track_id", sa.String(64), sa.ForeignKey("tracks.track_id"), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("playlist_items")
    op.drop_index("ix_playlists_run_date", table_name="playlists")
    op.drop_table("playlists")
