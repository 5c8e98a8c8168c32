"""case-insensitive uniqueness on stored keys, not on lower()

Replaces the unique indexes on lower(username) and lower(email) with unique
constraints on two new columns, username_key and email_key, which the app
fills with a key computed in Python. SQLite's lower() folds only A-Z, so the
old indexes let "Émile" and "émile" both register, and lookups comparing SQL
lower() with Python's str.lower() never found "Émile".

Revision ID: 723d35920cd6
Revises: d2b1e358e28c
Create Date: 2026-11-23 01:15:00.000000

"""

import unicodedata
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "723d35920cd6"
down_revision = "d2b1e358e28c"
branch_labels = None
depends_on = None

# Three times the column they are computed from (username 64, email 254):
# casefold() can lengthen a string up to threefold ("ß" becomes "ss").
USERNAME_KEY_LENGTH = 192
EMAIL_KEY_LENGTH = 762

# Only the columns this migration reads and writes, so that it keeps working
# whatever later migrations do to the table.
user = sa.table(
    "user",
    sa.column("id", sa.Integer),
    sa.column("username", sa.String),
    sa.column("email", sa.String),
    sa.column("username_key", sa.String),
    sa.column("email_key", sa.String),
)


def name_key(name: str) -> str:
    """Return the key that uniqueness compares: NFKC, stripped, casefolded.

    A copy of app.models.name_key as it is today. A migration must not import
    the app: the app's code moves on, and this migration must compute the keys
    the way they were defined when it was written, forever.
    """
    return unicodedata.normalize("NFKC", name).strip().casefold()


def clashes(rows, column: str) -> list[list[str]]:
    """Groups of values in `column` that differ but share a key (the old index let them in)."""
    by_key = defaultdict(list)
    for row in rows:
        by_key[name_key(row[column])].append(row[column])
    return [values for values in by_key.values() if len(values) > 1]


def upgrade():
    connection = op.get_bind()
    rows = connection.execute(sa.select(user.c.id, user.c.username, user.c.email)).mappings().all()

    # Refuse before changing anything: the unique constraints below would fail
    # with a bare IntegrityError, halfway through, on SQLite (whose schema
    # changes are not rolled back). Someone has to decide which account keeps
    # the name; a migration cannot.
    for column in ("username", "email"):
        if found := clashes(rows, column):
            raise RuntimeError(
                f"These {column}s differ only in case, so they cannot stay unique ignoring case;"
                f" rename all but one in each group, then upgrade again: {found}"
            )

    # Nullable at first: the rows already there get their keys just below.
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("username_key", sa.String(USERNAME_KEY_LENGTH)))
        batch_op.add_column(sa.Column("email_key", sa.String(EMAIL_KEY_LENGTH)))

    if rows:
        # One executemany UPDATE. The bind names differ from the column names,
        # which SQLAlchemy reserves for the SET clause.
        fill = (
            sa.update(user)
            .where(user.c.id == sa.bindparam("row_id"))
            .values(
                username_key=sa.bindparam("new_username_key"),
                email_key=sa.bindparam("new_email_key"),
            )
        )
        connection.execute(
            fill,
            [
                {
                    "row_id": row["id"],
                    "new_username_key": name_key(row["username"]),
                    "new_email_key": name_key(row["email"]),
                }
                for row in rows
            ],
        )

    # The old expression indexes go first, and outside batch mode: SQLite
    # cannot reflect an index on lower(...), so batch mode would not know about
    # them when it rebuilds the table.
    op.drop_index("uq_user_username_lower", table_name="user")
    op.drop_index("uq_user_email_lower", table_name="user")

    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.alter_column(
            "username_key", existing_type=sa.String(USERNAME_KEY_LENGTH), nullable=False
        )
        batch_op.alter_column(
            "email_key", existing_type=sa.String(EMAIL_KEY_LENGTH), nullable=False
        )
        batch_op.create_unique_constraint(batch_op.f("uq_user_username_key"), ["username_key"])
        batch_op.create_unique_constraint(batch_op.f("uq_user_email_key"), ["email_key"])


def downgrade():
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_user_email_key"), type_="unique")
        batch_op.drop_constraint(batch_op.f("uq_user_username_key"), type_="unique")
        batch_op.drop_column("email_key")
        batch_op.drop_column("username_key")

    # After batch mode, for the reason given in upgrade(). As in d2b1e358e28c.
    op.create_index("uq_user_username_lower", "user", [sa.text("lower(username)")], unique=True)
    op.create_index("uq_user_email_lower", "user", [sa.text("lower(email)")], unique=True)
