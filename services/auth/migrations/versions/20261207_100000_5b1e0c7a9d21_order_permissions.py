"""order permissions: the user role may place and read its orders; admins read any order and
operate sagas (services/README.md, issue 21)

Revision ID: 5b1e0c7a9d21
Revises: d83c1a829abb
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b1e0c7a9d21"
down_revision: str | Sequence[str] | None = "d83c1a829abb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USER_PERMISSIONS = ["orders:place", "orders:read"]
ADMIN_PERMISSIONS = [*USER_PERMISSIONS, "orders:manage", "sagas:read", "sagas:write"]
GRANTS = [("user", p) for p in USER_PERMISSIONS] + [("admin", p) for p in ADMIN_PERMISSIONS]


def upgrade() -> None:
    # Granted to the roles that still exist (admins may have edited them), once.
    for role, permission in GRANTS:
        op.execute(sa.text(
            "INSERT INTO role_permissions (role, permission) SELECT name, :permission "
            "FROM roles WHERE name = :role AND NOT EXISTS (SELECT 1 FROM role_permissions "
            "WHERE role = :role AND permission = :permission)"
        ).bindparams(role=role, permission=permission))


def downgrade() -> None:
    for role, permission in GRANTS:
        op.execute(sa.text("DELETE FROM role_permissions WHERE role = :role AND "
                           "permission = :permission").bindparams(role=role,
                                                                   permission=permission))
