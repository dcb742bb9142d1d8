"""The Alembic migrations build exactly the schema the models describe, on Postgres and SQLite."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from trainyard.db import upgrade_schema
from trainyard.db.models import Base


def _diff(url: str) -> list[Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    return diff


def test_models_match_migrations_on_postgres(settings: Any) -> None:
    # The session database was migrated by bin/migrate.
    assert _diff(settings.database_url) == []


def test_models_match_migrations_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    upgrade_schema(url)
    assert _diff(url) == []
