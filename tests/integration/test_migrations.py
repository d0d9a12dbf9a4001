"""Per-service Alembic histories through `python -m core` and core.db.migrations, on SQLite
and real PostgreSQL: fresh databases, idempotence, autogenerate, atomicity, concurrency, and
two services sharing one database without touching each other's history."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from core.db import migrations
from core.db.scaffold import init_migrations
from tests.helpers import cli, unique
from tests.integration.databases import BACKENDS, DatabaseFactory

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "sample_service"
SAMPLE_TABLES = {"widgets", "outbox", "outbox_lease", "inbox"}

NOTES_V1 = """
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db.models import ServiceBase, TimestampMixin, UUIDPrimaryKeyMixin


class Base(ServiceBase, DeclarativeBase):
    {metadata}


class Note(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    __tablename__ = "notes"

    title: Mapped[str] = mapped_column(String(80))
"""
NOTES_V2 = NOTES_V1.replace(
    "mapped_column(String(80))",
    "mapped_column(String(80), unique=True)\n"
    "    body: Mapped[str | None] = mapped_column(String(500))")


def python_m_core(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m core ARGS` in a new process from the repository root, as a developer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def ruff_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", "check", str(path)],
                          capture_output=True, text=True)


def forget(package: Path) -> None:
    """Drop a service's modules so the next import reads its edited models."""
    for name in [m for m in sys.modules if m.split(".")[0] == package.name]:
        del sys.modules[name]


def new_service(root: Path, models: str, metadata: str = "pass") -> Path:
    """A service package under `root` (not yet on sys.path) with the given models."""
    package = root / unique("notes").replace("-", "_")
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(models.format(metadata=metadata))
    return package


def revisions(service: Path) -> list[Path]:
    return sorted((service / "migrations" / "versions").glob("*.py"))


async def schema(url: str, schema_name: str | None = None) -> dict[str, Any]:
    """Tables, their columns and unique constraints, and every version table's revisions."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            def read(sync: Any) -> dict[str, Any]:
                found = inspect(sync)
                tables = found.get_table_names(schema=schema_name)
                versions = {
                    t: sorted(r[0] for r in sync.execute(text(
                        f"SELECT version_num FROM {schema_name + '.' if schema_name else ''}{t}")))
                    for t in tables if t.startswith("alembic_version_")}
                return {
                    "tables": set(tables),
                    "columns": {t: {c["name"] for c in found.get_columns(t, schema=schema_name)}
                                for t in tables},
                    "unique": {t: {u["name"] for u in found.get_unique_constraints(
                        t, schema=schema_name)} for t in tables},
                    "versions": versions,
                }
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


# --- the sample service's committed history --------------------------------------------------


async def test_migrate_creates_the_tables_and_is_idempotent(databases: DatabaseFactory) -> None:
    url = await databases.new()
    head = migrations.heads(SAMPLE)
    assert len(head) == 1

    out = ok(await cli("migrate", "tests/sample_service", "--url", url))
    assert f"at {head[0]}" in out
    first = await schema(url)
    assert first["tables"] == SAMPLE_TABLES | {"alembic_version_sample_service"}
    assert first["versions"] == {"alembic_version_sample_service": [head[0]]}
    assert "uq_widgets_sku" in first["unique"]["widgets"]  # the naming convention, by name
    assert {"id", "created_at", "updated_at", "deleted_at"} <= first["columns"]["widgets"]

    ok(await cli("migrate", "tests/sample_service", "--url", url))
    await migrations.upgrade(SAMPLE, url)
    assert await schema(url) == first
    assert await migrations.current(SAMPLE, url) == head
    shown = ok(await cli("showmigrations", "tests/sample_service", "--url", url))
    assert f"[X] {head[0]}" in shown


async def test_python_m_core_migrate_reads_database_url(databases: DatabaseFactory) -> None:
    """The real entry point in a new process, the database from DATABASE_URL, the service as
    a dotted package."""
    url = await databases.new()
    result = await asyncio.to_thread(python_m_core, "migrate", "tests.sample_service",
                                     env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert SAMPLE_TABLES < (await schema(url))["tables"]


async def test_downgrade_to_base_and_up_again(databases: DatabaseFactory) -> None:
    url = await databases.new()
    await migrations.upgrade(SAMPLE, url)
    ok(await cli("downgrade", "tests/sample_service", "-r", "base", "--url", url))
    emptied = await schema(url)
    assert emptied["tables"] == {"alembic_version_sample_service"}
    assert emptied["versions"] == {"alembic_version_sample_service": []}
    assert await migrations.current(SAMPLE, url) == ()
    await migrations.upgrade(SAMPLE, url)
    assert SAMPLE_TABLES < (await schema(url))["tables"]


async def test_committed_history_matches_the_models(databases: DatabaseFactory) -> None:
    """Fails when someone changes tests/sample_service/models.py without makemigrations."""
    url = await databases.new()
    await migrations.upgrade(SAMPLE, url)
    await migrations.check(SAMPLE, url)
    out = ok(await cli("makemigrations", "tests/sample_service", "--check", "--url", url))
    assert "no changes" in out


async def test_concurrent_upgrades_take_turns(databases: DatabaseFactory) -> None:
    """Replicas starting together all run upgrade(); none may fail on a half-made schema."""
    url = await databases.new()
    await asyncio.gather(*(migrations.upgrade(SAMPLE, url) for _ in range(4)))
    assert await migrations.current(SAMPLE, url) == migrations.heads(SAMPLE)
    assert (await schema(url))["versions"]["alembic_version_sample_service"] == list(
        migrations.heads(SAMPLE))


async def test_two_services_migrating_together_on_one_loop_keep_to_their_own_databases(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    """Several services in one process (`make up MODE=monolith`) migrate at once: Alembic's
    module-level proxies must not send one's operations to the other's database."""
    notes = new_service(tmp_path, NOTES_V1)
    init_migrations(notes)
    assert await migrations.make_migration(notes, "notes") is not None
    sample_url, notes_url = await databases.new(), await databases.new()

    await asyncio.gather(migrations.upgrade(SAMPLE, sample_url),
                         migrations.upgrade(notes, notes_url))
    assert (await schema(sample_url))["tables"] == SAMPLE_TABLES | {
        "alembic_version_sample_service"}
    assert (await schema(notes_url))["tables"] == {"notes", migrations.locate(notes).version_table}


async def test_sql_mode_prints_the_ddl_without_a_database() -> None:
    out = ok(await cli("migrate", "tests/sample_service", "--sql",
                       "--url", "postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    assert "CREATE TABLE alembic_version_sample_service" in out
    assert "CREATE TABLE widgets" in out and "CONSTRAINT uq_widgets_sku UNIQUE (sku)" in out


async def test_unknown_service_is_a_clear_error() -> None:
    result = await cli("migrate", "no_such_service", "--url", "sqlite+aiosqlite:///:memory:")
    assert result.exit_code == 1
    assert "no service 'no_such_service'" in result.output


# --- a new service: scaffold, autogenerate, evolve, share a database ----------------------------


async def test_makemigrations_scaffolds_autogenerates_and_evolves(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    service = new_service(tmp_path, NOTES_V1)
    url = await databases.new()

    out = ok(await cli("makemigrations", str(service), "-m", "notes"))
    assert "created" in out and "wrote" in out
    assert (service / "migrations" / "env.py").is_file()
    [first] = revisions(service)
    assert 'op.create_table(\n        "notes"' in first.read_text()
    assert "no changes detected" in ok(await cli("makemigrations", str(service), "-m", "again"))
    assert revisions(service) == [first]
    lint = ruff_check(first)
    assert lint.returncode == 0, lint.stdout  # generated code passes the linter

    ok(await cli("migrate", str(service), "--url", url))
    (service / "models.py").write_text(NOTES_V2.format(metadata="pass"))
    forget(service)
    stale = await cli("makemigrations", str(service), "--check")
    assert stale.exit_code == 1 and "models and migrations differ" in stale.output

    ok(await cli("makemigrations", str(service), "-m", "note body", "--url", url))
    [second] = [path for path in revisions(service) if path != first]
    assert "add_column" in second.read_text()
    ok(await cli("migrate", str(service), "--url", url))
    after = await schema(url)
    assert "body" in after["columns"]["notes"]
    assert "uq_notes_title" in after["unique"]["notes"]

    ok(await cli("downgrade", str(service), "--revision", "-1", "--url", url))
    before = await schema(url)
    assert "body" not in before["columns"]["notes"]
    assert "uq_notes_title" not in before["unique"]["notes"]


async def test_two_services_share_a_database_without_colliding(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    notes = new_service(tmp_path, NOTES_V1)
    init_migrations(notes)
    assert await migrations.make_migration(notes, "notes") is not None
    url = await databases.new()

    await migrations.upgrade(SAMPLE, url)
    await migrations.upgrade(notes, url)
    shared = await schema(url)
    notes_table = migrations.locate(notes).version_table
    assert shared["tables"] == SAMPLE_TABLES | {
        "notes", "alembic_version_sample_service", notes_table}
    assert shared["versions"] == {
        "alembic_version_sample_service": list(migrations.heads(SAMPLE)),
        notes_table: list(migrations.heads(notes)),
    }

    # Autogenerate against the shared database must not try to drop the other's tables.
    assert await migrations.make_migration(notes, "nothing", database=url) is None
    await migrations.check(SAMPLE, url)

    await migrations.downgrade(notes, "base", url)
    left = await schema(url)
    assert left["tables"] == SAMPLE_TABLES | {"alembic_version_sample_service", notes_table}
    assert left["versions"]["alembic_version_sample_service"] == list(migrations.heads(SAMPLE))


async def test_a_failed_upgrade_leaves_nothing_behind(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    service = new_service(tmp_path, NOTES_V1)
    init_migrations(service)
    (service / "migrations" / "versions" / "0001_broken.py").write_text(textwrap.dedent('''
        import sqlalchemy as sa
        from alembic import op

        revision = "0001"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade():
            op.create_table("half", sa.Column("id", sa.Integer, primary_key=True))
            op.execute("INSERT INTO no_such_table VALUES (1)")


        def downgrade():
            op.drop_table("half")
    '''))
    url = await databases.new()
    with pytest.raises(Exception, match="no_such_table"):
        await migrations.upgrade(service, url)
    assert (await schema(url))["tables"] == set()
    assert await migrations.current(service, url) == ()


@pytest.mark.parametrize("databases", [BACKENDS[1]], indirect=True)
async def test_a_service_in_its_own_postgres_schema(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    name = unique("svc").replace("-", "_")
    service = new_service(tmp_path, "from core.db.models import service_metadata\n" + NOTES_V1,
                          metadata=f"metadata = service_metadata(schema={name!r})")
    url = await databases.new()
    init_migrations(service)
    assert await migrations.make_migration(service, "notes", database=url) is not None
    await migrations.upgrade(service, url)
    inside = await schema(url, name)
    assert inside["tables"] == {"notes", migrations.locate(service).version_table}
    assert (await schema(url))["tables"] == set()  # nothing in public
    await migrations.check(service, url)
