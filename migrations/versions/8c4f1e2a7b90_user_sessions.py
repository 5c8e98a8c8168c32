"""one row per logged-in browser, so that logging out can end a session

Flask keeps its session in a signed cookie, which the server can't take back:
a copy saved before logging out stays valid until it expires. Each login now
gets a row here, and the cookie carries only a random token whose digest
names the row; logging out deletes the row, and the copy is worth nothing.

A new table: nothing already stored changes. Everyone logged in before this
upgrade is logged out by it (their cookies name no row).

Revision ID: 8c4f1e2a7b90
Revises: 5b8e1c0a9d47
Create Date: 2026-12-05 18:45:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "8c4f1e2a7b90"
down_revision = "5b8e1c0a9d47"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "user_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("password_digest", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_user_session_user_id_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_user_session_token_hash")),
    )
    with op.batch_alter_table("user_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_session_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_user_session_created"), ["created"], unique=False)


def downgrade():
    with op.batch_alter_table("user_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_session_created"))
        batch_op.drop_index(batch_op.f("ix_user_session_user_id"))
    op.drop_table("user_session")
