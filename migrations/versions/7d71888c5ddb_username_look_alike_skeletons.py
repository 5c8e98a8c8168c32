"""what each username looks like, so that look-alike names can be refused

Two new columns on "user", username_lower_skeleton and username_upper_skeleton:
the name's key with every character replaced by a fixed member of its group
of look-alikes, in small letters and in capitals (app/usernames.py explains
them). The forms refuse a new name whose skeleton matches another account's.

Added nullable, filled for the users already there, then made NOT NULL. Each
is indexed for the forms' lookup, but not unique: a database may already hold
look-alike names, which this upgrade keeps as they are (a unique index could
not be built on them, and only a person can decide who should be renamed).

Revision ID: 7d71888c5ddb
Revises: 8c4f1e2a7b90
Create Date: 2026-12-06 10:00:00.000000

"""

import unicodedata

import sqlalchemy as sa
from alembic import op
from confusable_homoglyphs.confusables import confusables_data

# revision identifiers, used by Alembic.
revision = "7d71888c5ddb"
down_revision = "8c4f1e2a7b90"
branch_labels = None
depends_on = None

# Four times the username's 64 characters (app.usernames.SKELETON_MAX_GROWTH).
SKELETON_LENGTH = 256

# Only the columns this migration reads and writes, so that it keeps working
# whatever later migrations do to the table.
user = sa.table(
    "user",
    sa.column("id", sa.Integer),
    sa.column("username", sa.String),
    sa.column("username_lower_skeleton", sa.String),
    sa.column("username_upper_skeleton", sa.String),
)

# Copies of app.models.name_key and of app/usernames.py's skeletons as they are
# today. A migration must not import the app: the app's code moves on, and this
# migration must compute the columns the way they were defined when it was
# written. It does read the confusable-homoglyphs package, pinned in
# requirements.txt: the app computes its skeletons from the same data.


def name_key(name: str) -> str:
    """Return the key that uniqueness compares: NFKC, stripped, casefolded."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


def look_alike_table() -> dict[int, str]:
    """A str.translate() table sending each character that has look-alikes to the
    smallest character of its group (single characters only; the package wraps
    right-to-left ones in direction marks)."""
    smallest: dict[str, str] = {}

    def top(char: str) -> str:
        while smallest.setdefault(char, char) != char:
            char = smallest[char]
        return char

    for char, look_alikes in confusables_data.items():
        for look_alike in look_alikes:
            one, other = char.strip("\u200e\u200f"), look_alike["c"].strip("\u200e\u200f")
            if len(one) == len(other) == 1:
                one, other = top(one), top(other)
                smallest[max(one, other)] = min(one, other)
    return {ord(char): top(char) for char in smallest if top(char) != char}


def skeleton(text: str, look_alikes: dict[int, str]) -> str:
    """Decompose, replace each character by its group's representative, compose."""
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", decomposed.translate(look_alikes))


def upgrade():
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("username_lower_skeleton", sa.String(SKELETON_LENGTH)))
        batch_op.add_column(sa.Column("username_upper_skeleton", sa.String(SKELETON_LENGTH)))

    connection = op.get_bind()
    rows = connection.execute(sa.select(user.c.id, user.c.username)).all()
    if rows:
        look_alikes = look_alike_table()
        # One executemany UPDATE; the bind names differ from the column names,
        # which SQLAlchemy reserves for the SET clause.
        fill = (
            sa.update(user)
            .where(user.c.id == sa.bindparam("row_id"))
            .values(
                username_lower_skeleton=sa.bindparam("lower"),
                username_upper_skeleton=sa.bindparam("upper"),
            )
        )
        connection.execute(
            fill,
            [
                {
                    "row_id": row.id,
                    "lower": skeleton(name_key(row.username), look_alikes),
                    "upper": skeleton(name_key(row.username).upper(), look_alikes),
                }
                for row in rows
            ],
        )

    with op.batch_alter_table("user", schema=None) as batch_op:
        for column in ("username_lower_skeleton", "username_upper_skeleton"):
            batch_op.alter_column(column, existing_type=sa.String(SKELETON_LENGTH), nullable=False)
            batch_op.create_index(batch_op.f(f"ix_user_{column}"), [column], unique=False)


def downgrade():
    with op.batch_alter_table("user", schema=None) as batch_op:
        for column in ("username_upper_skeleton", "username_lower_skeleton"):
            batch_op.drop_index(batch_op.f(f"ix_user_{column}"))
            batch_op.drop_column(column)
