"""the new email address an account waits to confirm

A new nullable column on "user", pending_email: the address a confirmation
link was last mailed to (app/auth/email.py). Only that address can be
confirmed, so a link works once, and asking for another address kills the
links mailed before. Nothing already stored changes.

Revision ID: c5e8a1f3d7b2
Revises: 9b2e4d7a5c13
Create Date: 2026-12-06 01:50:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "c5e8a1f3d7b2"
down_revision = "9b2e4d7a5c13"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_email", sa.String(254)))


def downgrade():
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("pending_email")
