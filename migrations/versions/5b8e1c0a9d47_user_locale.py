"""the language each user chose

A nullable column: NULL means "never chose", and the browser's Accept-Language
decides, so the rows already there need no value. Adding a nullable column is
a plain ALTER TABLE on both databases; batch mode, as in the earlier
migrations, keeps SQLite's table rebuild in one place should it ever need one.

Revision ID: 5b8e1c0a9d47
Revises: e2fd7e304231
Create Date: 2026-11-23 04:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "5b8e1c0a9d47"
down_revision = "e2fd7e304231"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("locale", sa.String(16), nullable=True))


def downgrade():
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("locale")
