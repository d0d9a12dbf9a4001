"""saga_instances.trace_context: the trace a saga began in, continued by its later steps

Revision ID: 7c2d9e4b1f60
Revises: eab454789b97
Create Date: 2026-12-07 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c2d9e4b1f60"
down_revision: str | Sequence[str] | None = "eab454789b97"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("saga_instances") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("saga_instances") as batch:
        batch.drop_column("trace_context")
