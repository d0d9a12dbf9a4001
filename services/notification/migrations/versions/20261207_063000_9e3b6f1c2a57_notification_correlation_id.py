"""notifications.correlation_id: the user action a notification is part of

Revision ID: 9e3b6f1c2a57
Revises: 5c1a7e2f9d40
Create Date: 2026-12-07 06:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9e3b6f1c2a57"
down_revision: str | Sequence[str] | None = "5c1a7e2f9d40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("correlation_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("correlation_id")
