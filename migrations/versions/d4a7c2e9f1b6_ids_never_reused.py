"""on SQLite, never give a new user or post the id of a deleted one

SQLite gives a new row the highest id in use plus one: once the newest post
is deleted, the next post gets its id, and a Delete button still open in
another tab would delete the new post. AUTOINCREMENT makes SQLite remember
the highest id it ever gave instead (in its sqlite_sequence table). SQLite
can't add it to a table, so the two tables are rebuilt with it, their rows
copied over with their ids.

PostgreSQL's sequences never hand an id out twice: nothing to do there.

Revision ID: d4a7c2e9f1b6
Revises: c5e8a1f3d7b2
Create Date: 2026-12-06 01:55:00.000000

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "d4a7c2e9f1b6"
down_revision = "c5e8a1f3d7b2"
branch_labels = None
depends_on = None

TABLES = ("user", "post")


def rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade():
    rebuild(autoincrement=True)


def downgrade():
    rebuild(autoincrement=False)
