"""when each follow began, so that follower lists can show the newest first

A new column on "followers", created: when the follow was made. The lists of
a user's followers and of the people they follow are sorted by it, newest
first, and paged by (created, user id) like the posts; an index for each list
is sorted the same way. The old index on followed_id alone goes: the new
(followed_id, created, follower_id) index serves everything it served.

Follows made before this upgrade didn't record their time: they all get the
moment of the upgrade, and among themselves they keep the order of the user
ids.

Revision ID: 3f6a9c2d1b84
Revises: 7d71888c5ddb
Create Date: 2026-12-06 01:10:00.000000

"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "3f6a9c2d1b84"
down_revision = "7d71888c5ddb"
branch_labels = None
depends_on = None

followers = sa.table("followers", sa.column("created", sa.DateTime(timezone=True)))


def upgrade():
    # Added nullable and filled, then made NOT NULL: SQLite can't add a
    # column whose default isn't a constant (it can when the batch below
    # rebuilds the table).
    with op.batch_alter_table("followers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created", sa.DateTime(timezone=True)))
    op.execute(followers.update().values(created=datetime.now(UTC)))
    with op.batch_alter_table("followers", schema=None) as batch_op:
        # The server's default, for follows made by workers still running the
        # old code while the new one is deployed: they don't know the column.
        batch_op.alter_column(
            "created",
            existing_type=sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        )
        batch_op.drop_index("ix_followers_followed_id")
        batch_op.create_index(
            "ix_followers_followed_id_created", ["followed_id", "created", "follower_id"]
        )
        batch_op.create_index(
            "ix_followers_follower_id_created", ["follower_id", "created", "followed_id"]
        )


def downgrade():
    with op.batch_alter_table("followers", schema=None) as batch_op:
        batch_op.drop_index("ix_followers_follower_id_created")
        batch_op.drop_index("ix_followers_followed_id_created")
        batch_op.create_index("ix_followers_followed_id", ["followed_id"])
        batch_op.drop_column("created")
