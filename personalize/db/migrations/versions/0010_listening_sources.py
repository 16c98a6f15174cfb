"""Real listening data in: the catalog keeps each track's artist and its external ids (Spotify URI, ISRC,
MusicBrainz recording id) so exported plays can be matched to it, and every database source pulled into
listening_events keeps its watermark (how far it has been read).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 drops columns too): a batch rebuild of tracks would trip the views on it.
    op.add_column("tracks", sa.Column("artist", sa.String(300)))
    op.create_table(
        "track_external_ids",
        sa.Column("scheme", sa.String(16), primary_key=True),  # spotify | isrc | mbid
        sa.Column("value", sa.String(200), primary_key=True),
        sa.Column("track_id", sa.String(64), sa.ForeignKey("tracks.track_id"), nullable=False, index=True),
    )
    op.create_table(
        "ingest_watermarks",
        sa.Column("source", sa.String(100), primary_key=True),
        sa.Column("watermark", sa.Text),  # the largest watermark value stored, as text
        sa.Column("rows_read", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pulled_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("ingest_watermarks")
    op.drop_table("track_external_ids")
    op.drop_column("tracks", "artist")
