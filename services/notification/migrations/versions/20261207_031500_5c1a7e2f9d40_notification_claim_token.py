"""notifications.claim_token: the delivery claim that holds a row

Revision ID: 5c1a7e2f9d40
Revises: b42d4913d099
Create Date: 2026-12-07 03:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1a7e2f9d40"
down_revision: str | Sequence[str] | None = "b42d4913d099"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("claim_token")
