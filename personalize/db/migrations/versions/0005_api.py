"""App backend API: index playlist items by track, for the track-detail "why was this picked" lookup.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_playlist_items_track_id", "playlist_items", ["track_id"])


def downgrade() -> None:
    op.drop_index("ix_playlist_items_track_id", table_name="playlist_items")
