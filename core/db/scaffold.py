"""Create a service's `migrations/` folder: a three-line env.py, the revision template, and an
empty `versions/`. Existing files are left alone, so it is safe to run again."""

from __future__ import annotations

from pathlib import Path

from core.db.migrations import MIGRATIONS_DIR, ServiceMigrations, locate

ENV_PY = '''\
"""Alembic environment of the {name} service; the logic lives in core.db.migrations."""

from core.db.migrations import run_env
from {module} import {root}

run_env({metadata})
'''

# Ruff-clean output (modern typing, sorted imports) so generated revisions pass the linter.
SCRIPT_MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''


def init_migrations(service: str | Path | ServiceMigrations, metadata: str | None = None) -> Path:
    """Scaffold `<service>/migrations/`; `metadata` is "module:attribute" of the service's
    MetaData, by default `<package>.models:Base.metadata`. Returns the migrations folder."""
    found = locate(service)
    default = f"{found.package}.models" if found.package else "models"
    module, _, attribute = (metadata or f"{default}:Base.metadata").partition(":")
    if not module or not attribute:
        raise ValueError(f"metadata must look like 'package.models:Base.metadata', not "
                         f"{metadata!r}")
    folder = found.service_dir / MIGRATIONS_DIR
    (folder / "versions").mkdir(parents=True, exist_ok=True)
    _write_once(folder / "env.py", ENV_PY.format(
        name=found.name, module=module, root=attribute.split(".")[0], metadata=attribute))
    _write_once(folder / "script.py.mako", SCRIPT_MAKO)
    return folder


def _write_once(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text(text, encoding="utf-8")
