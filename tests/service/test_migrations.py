"""The Alembic migrations build exactly the schema `trainyard/db/tables.py` registers, on Postgres and
SQLite; every table is registered there; the migration files are numbered in the order of their chain."""
from __future__ import annotations

import ast
import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Column, Integer, MetaData, Table, create_engine, inspect, text

from tests.conftest import PG_ADMIN_DSN, PG_URL_BASE, ROOT, subprocess_env
from trainyard.db import upgrade_schema
from trainyard.db.tables import TABLE_MODULES, metadata

# What the metadata cannot describe, written in raw SQL by 0005_live_events_logs_webhooks.py: the triggers
# that fill job_events in the transaction of each change, and the one that sends NOTIFY at commit.
POSTGRES_TRIGGERS = {
    ("jobs", "jobs_status_event"),
    ("epoch_metrics", "epoch_metrics_event"),
    ("findings", "findings_event"),
    ("job_events", "job_events_notify"),
}


def _diff(url: str, target: MetaData = metadata) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            # Tables, columns (type, nullability, server default), indexes, unique constraints, foreign keys.
            context = MigrationContext.configure(conn, opts={"compare_server_default": True})
            return compare_metadata(context, target)
    finally:
        engine.dispose()


def test_bin_migrate_builds_a_fresh_postgres_database_that_matches_the_metadata() -> None:
    name = f"trainyard_migrate_{secrets.token_hex(4)}"
    url = f"{PG_URL_BASE}/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        subprocess.run([str(ROOT / "bin" / "migrate")], env=subprocess_env({"TRAINYARD_DATABASE_URL": url}),
                       cwd=ROOT, check=True, timeout=300)
        assert _diff(url) == []

        engine = create_engine(url)
        try:
            inspector = inspect(engine)
            assert set(inspector.get_table_names()) == set(metadata.tables) | {"alembic_version"}
            # compare_metadata leaves CHECK constraints out: compared here by name.
            for table in metadata.sorted_tables:
                declared = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
                assert {c["name"] for c in inspector.get_check_constraints(table.name)} == declared, table.name
            with engine.connect() as conn:
                triggers = set(conn.execute(text(
                    "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE NOT t.tgisinternal")).all())
                head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        finally:
            engine.dispose()
        assert triggers == POSTGRES_TRIGGERS
        assert head == ScriptDirectory.from_config(_alembic_config()).get_current_head()
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_session_database_matches_the_metadata(settings: Any) -> None:
    # The session database was migrated by bin/migrate too, before any test wrote to it.
    assert _diff(settings.database_url) == []


def test_models_match_migrations_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    upgrade_schema(url)
    assert _diff(url) == []


def test_the_comparison_sees_a_table_the_migrations_do_not_build(tmp_path: Path) -> None:
    # Guards the tests above against comparing nothing: one more table in the metadata is a difference.
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    upgrade_schema(url)
    extra = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(extra)
    Table("not_migrated", extra, Column("id", Integer, primary_key=True))
    assert [d[0] for d in _diff(url, extra)] == ["add_table"]


def test_every_table_is_registered_in_one_place() -> None:
    """Whatever a process imports, the tables are those of the modules `tables.py` lists."""
    code = (
        "import importlib, json, pkgutil, trainyard, trainyard.db\n"
        "from trainyard.db.tables import metadata\n"
        "first = sorted(metadata.tables)\n"
        "for m in pkgutil.walk_packages(trainyard.__path__, 'trainyard.'):\n"
        "    importlib.import_module(m.name)\n"
        "from trainyard.db.models import Base\n"
        "owners = {mapper.local_table.name: mapper.class_.__module__ for mapper in Base.registry.mappers}\n"
        "print(json.dumps({'first': first, 'all': sorted(metadata.tables), 'owners': owners}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env({}), capture_output=True,
                         text=True, timeout=120, check=True)
    found = json.loads(out.stdout.splitlines()[-1])
    assert found["all"] == found["first"]  # importing trainyard.db alone registers every table
    registered = {module.__name__ for module in TABLE_MODULES}
    assert set(found["owners"]) == set(found["all"])  # every table is an ORM model, none a bare Table
    assert {table: module for table, module in found["owners"].items() if module not in registered} == {}


def test_no_table_is_declared_outside_the_registered_modules() -> None:
    registered = {Path(module.__file__).resolve() for module in TABLE_MODULES}
    declared = []
    for package in ("trainyard", "service", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            if path.resolve() in registered:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Name) and node.id in ("__tablename__", "Table"):
                    declared.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and "CREATE TABLE" in node.value.upper():
                    declared.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert declared == []


def _alembic_config() -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    return cfg


def test_migration_files_are_numbered_in_chain_order() -> None:
    """File names follow the chain (0001, 0002, ...), whatever the revision ids inside them: databases
    record the ids, so those never change (migrations/README.md)."""
    script = ScriptDirectory.from_config(_alembic_config())
    chain = list(reversed(list(script.walk_revisions("base", "heads"))))
    assert len(script.get_heads()) == 1 and chain[0].down_revision is None
    for earlier, later in zip(chain, chain[1:]):
        assert later.down_revision == earlier.revision
    files = [Path(rev.path).name for rev in chain]
    assert files == sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert [name.split("_", 1)[0] for name in files] == [f"{n:04d}" for n in range(1, len(files) + 1)]
