"""PostgreSQL: listening_events.event_id and .listener_id compare bytewise (COLLATE "C").

Both are opaque keys: nothing sorts them for people to read. Under the database's linguistic collation
every comparison in their B-trees (the primary key, and the listener-then-time index) goes through the C
library's strcoll; bytewise comparison lets PostgreSQL use abbreviated keys, so building those indexes
after a bulk load of 10M events takes about half the time, and every lookup is cheaper. Equality is the
same as before (both collations are deterministic), so joins with listeners and the other tables are
unchanged. SQLite already compares bytewise. The one view over listening_events is rebuilt around the
change.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from alembic import op

from personalize.db.views import view_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("event_id", "listener_id")
VIEW = "v_engagement_by_source"  # reads listening_events: PostgreSQL will not retype a column under a view


def _collate(collation: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    for column in COLUMNS:
        op.execute(
            f'ALTER TABLE listening_events ALTER COLUMN {column} TYPE varchar(64) COLLATE "{collation}"'
        )
    op.execute(view_sql(VIEW, bind.dialect.name))


def upgrade() -> None:
    _collate("C")


def downgrade() -> None:
    _collate("default")
