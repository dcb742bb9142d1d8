"""Every table of the schema, registered in one place: one `MetaData`, filled by the modules listed here.

The tables are ORM models on `models.Base`, grouped by what they hold:
- models: tenants, tokens, data sets, jobs and their labels, metric and diagnostics rows, findings,
  checkpoints, artifacts and their chunks, workers;
- sweeps: sweeps;
- exports: job exports;
- live: job events, job logs, webhooks and their deliveries (the outbox).

Importing `trainyard.db` imports this module, so a process that uses any model knows the whole schema
(foreign keys between the groups resolve); Alembic's environment and the migration test compare the
database against `metadata`. A new table goes into one of these modules, or a new module added to
`TABLE_MODULES`; tests/service/test_migrations.py fails for a table defined anywhere else.

What the metadata does not describe: database functions and triggers written in raw SQL by the
migrations (the `job_events` triggers and NOTIFY, SQLite's stand-in for the failed-job CHECK constraint).
"""
from __future__ import annotations

from sqlalchemy import MetaData

from trainyard.db import exports, live, models, sweeps

TABLE_MODULES = (models, sweeps, exports, live)

metadata: MetaData = models.Base.metadata
