"""a trigram index on the posts' text, for search on PostgreSQL

Search matches any part of a post (LIKE '%word%', ignoring case), which an
ordinary index can't serve: it sorts whole values, and the text searched for
may start anywhere. pg_trgm indexes every run of three characters instead,
which serves such a match in any language, Chinese included.

PostgreSQL only: SQLite has no such index, and this migration does nothing
there (search reads the posts one by one; README, "Speed").

pg_trgm ships with PostgreSQL (Debian's postgresql package includes it) and,
from PostgreSQL 13, is a "trusted" extension: the database's owner may create
it, no superuser needed. A role that doesn't own the database gets
"permission denied to create extension": a superuser runs
`CREATE EXTENSION pg_trgm` in the database once, and this migration finds it.

Which characters make trigrams follows the database's locale (LC_CTYPE): in
C.UTF-8 or en_US.UTF-8, Chinese characters do; in plain "C", only ASCII
letters and digits, and a search in Chinese is still right, only not served
by the index.

Revision ID: 9b2e4d7a5c13
Revises: 3f6a9c2d1b84
Create Date: 2026-12-06 01:20:00.000000

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "9b2e4d7a5c13"
down_revision = "3f6a9c2d1b84"
branch_labels = None
depends_on = None


def on_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade():
    if on_postgresql():
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_post_body_trigram",
            "post",
            ["body"],
            postgresql_using="gin",
            postgresql_ops={"body": "gin_trgm_ops"},
        )


def downgrade():
    if on_postgresql():
        # The extension stays: other objects in the database may use it by now.
        op.drop_index("ix_post_body_trigram", table_name="post")
