"""post indexes sorted like the lists that read them

Every list of posts is sorted by (timestamp, id), newest first, and paged with
a cursor on those two columns (app/pagination.py). Adding `id` to both post
indexes lets the database find "the next 11 posts after this one" in the index
itself. SQLite already kept the rowid (the id) in each index, so there it
changes nothing; PostgreSQL gains an index that serves the whole ORDER BY.

The new indexes are built before the old ones are dropped, so the lists are
never without one.

Revision ID: e2fd7e304231
Revises: 723d35920cd6
Create Date: 2026-11-23 03:31:51.937141

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "e2fd7e304231"
down_revision = "723d35920cd6"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_post_timestamp_id", "post", ["timestamp", "id"])
    op.create_index("ix_post_user_id_timestamp_id", "post", ["user_id", "timestamp", "id"])
    op.drop_index("ix_post_timestamp", table_name="post")
    op.drop_index("ix_post_user_id_timestamp", table_name="post")


def downgrade():
    op.create_index("ix_post_timestamp", "post", ["timestamp"])
    op.create_index("ix_post_user_id_timestamp", "post", ["user_id", "timestamp"])
    op.drop_index("ix_post_timestamp_id", table_name="post")
    op.drop_index("ix_post_user_id_timestamp_id", table_name="post")
