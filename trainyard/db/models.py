"""The database schema: the source of truth for tenants, jobs, metrics, checkpoints and artifacts.

The same models run on Postgres (production, tests) and SQLite (the embedded default). JSON columns are
JSONB on Postgres.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JsonType = JSON().with_variant(JSONB(), "postgresql")

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tn"))
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tok"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # sha256 of the secret: the secret itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    format: Mapped[str] = mapped_column(String(8))
    artifact_key: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # Shapes, dtypes, sample counts per split, task: what validation needs without reading the file.
    info: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_datasets_tenant_created", "tenant_id", "created_at"),)


class Job(Base):
    """A training job. Its status changes only in trainyard/lifecycle.py (queued, running, succeeded,
    failed, cancelled; back to queued when an attempt is interrupted or its worker is lost)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer)
    best_monitor: Mapped[str | None] = mapped_column(String(64))
    best_value: Mapped[float | None] = mapped_column(Float)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Outbox marker: set once the broker accepted the job's message; a queued job without it is
    # enqueued again by the workers' sweep, so a broker outage at submit time loses nothing.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the trainer reported at start: parameter counts, layer summary, normalisation statistics.
    model_info: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    # Lease: the worker holding a running job renews it; an expired lease means the worker is gone.
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    # Graceful stops (SIGTERM) that put the job back in the queue; they do not count as failed attempts.
    interruptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    # The latest resume backup (model + optimizer state) and the callbacks' state at that epoch.
    backup_key: Mapped[str | None] = mapped_column(String(200))
    backup_epoch: Mapped[int | None] = mapped_column(Integer)
    resume_state: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # The resource class the job asked for (trainyard/resources.py): it picks the Celery queue, and the
    # queue position counts queued jobs of the same class.
    resource_class: Mapped[str] = mapped_column(String(16), default="any", server_default="any")
    # A sweep's trial (trainyard/sweeps): the sweep, the trial's number in it and the values it sampled.
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL"))
    trial_index: Mapped[int | None] = mapped_column(Integer)
    trial_params: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # The Optuna trial's system attributes (trainyard/sweeps/study.py): what its sampler and pruner keep.
    trial_attrs: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # What trained the job's last attempt: versions, device, determinism, worker (workers/environment.py).
    environment: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # A fork (trainyard/forks.py): the job it was made from, where its weights came from ("scratch",
    # "best", "last" or "epoch", that epoch in `initial_weights_epoch`), the merge patch applied to the
    # parent's spec and the ids of the parent's findings it applied. No foreign key: the lineage stays
    # readable after the parent is deleted.
    parent_id: Mapped[str | None] = mapped_column(String(40))
    parent_from: Mapped[str | None] = mapped_column(String(16))
    parent_patch: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    parent_findings: Mapped[list[Any] | None] = mapped_column(JsonType)
    # The fork's starting weights: the parent's artifact copied under the child's own keys (so the parent's
    # later backups or its deletion cannot take them away) and the parent's epoch they were saved at.
    initial_weights_key: Mapped[str | None] = mapped_column(String(200))
    initial_weights_epoch: Mapped[int | None] = mapped_column(Integer)
    # The job's labels as they are now (trainyard/labels.py writes them with their `job_labels` rows):
    # read with the row, so a status poll needs no join. Null for jobs from before labels: none.
    labels: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # Written with the job (submission.new_job) and replaced by trainyard/labels.py; never loaded through
    # the job, so no read path pays for it by accident.
    # A replay (`POST /v1/jobs/{id}/replay`): the job it trains again with the same spec, data and seed, and,
    # once it ended, how its per-epoch metrics and environment compare with that job's (trainyard/compare.py,
    # written by trainyard/lifecycle.py). No foreign key, like `parent_id`.
    replay_of: Mapped[str | None] = mapped_column(String(40))
    reproduction: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    label_rows: Mapped[list[JobLabel]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                      lazy="raise")


    __table_args__ = (
        # A failed job says why (trainyard/job_errors.py). Migration 0007_failed_jobs_have_an_error.py adds
        # this on Postgres; on SQLite, where a constraint cannot be added to an existing table, two triggers
        # refuse the same rows.
        CheckConstraint("status <> 'failed' OR (error_code IS NOT NULL AND error_message IS NOT NULL)",
                        name="ck_jobs_failed_has_error"),
        # One job per trial: the row lock serialises top-ups on Postgres; this also holds on SQLite.
        UniqueConstraint("sweep_id", "trial_index", name="uq_jobs_sweep_trial"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_tenant_status_created", "tenant_id", "status", "created_at", "id"),
        # A tenant's training seconds (trainyard/usage.py), summed from the index alone.
        Index("ix_jobs_tenant_finished", "tenant_id", "finished_at", "started_at"),
        # The list sorted by best value (either way; jobs without one come last, trainyard/job_search.py).
        Index("ix_jobs_tenant_best", "tenant_id", "best_value", "id"),
        # The list's name filter, a substring: trigrams on Postgres (pg_trgm, migration 0010_job_labels.py);
        # on SQLite this is a plain index the filter cannot use, and it scans the tenant's jobs.
        Index("ix_jobs_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_jobs_status_class", "status", "resource_class"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_parent", "parent_id", "created_at"),
        # The queue: queued jobs of a class in the order their messages were sent (queue positions; 0012).
        Index("ix_jobs_queue", "resource_class", text("coalesce(enqueued_at, created_at)"), "id",
              postgresql_where=text("status = 'queued'"), sqlite_where=text("status = 'queued'")),
    )


class JobLabel(Base):
    """One label of a job, a row each: the jobs list finds a tenant's jobs by label on one B-tree, in the
    order it pages them (creation, newest first), so page 200 of `label=team:vision` costs what page 1
    does. `tenant_id` and `created_at` are the job's, copied because they never change."""

    __tablename__ = "job_labels"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    tenant_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_job_labels_tenant_key_value_created", "tenant_id", "key", "value", "created_at", "job_id"),
        Index("ix_job_labels_tenant_key_created", "tenant_id", "key", "created_at", "job_id"),  # `label=key`
    )


class EpochMetrics(Base):
    __tablename__ = "epoch_metrics"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    values: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EpochDiagnostics(Base):
    """Per-epoch training dynamics of every trainable variable (see the diagnostics endpoint)."""

    __tablename__ = "epoch_diagnostics"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    # [{"layer", "name", "grad_norm", "weight_norm", "update_norm", "update_ratio", "zero_grad_fraction"}]
    variables: Mapped[list[Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Finding(Base):
    """A diagnosis with its evidence and a suggested spec change; one row per job, code and layer."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # "" for findings about the whole model (NULL would defeat the unique constraint on Postgres).
    layer: Mapped[str] = mapped_column(String(200), default="")
    epoch: Mapped[int | None] = mapped_column(Integer)
    suggested_change: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # What the suggested change comes from ("update_ratio", "divergence", ...; workers/trainer/diagnostics).
    suggested_change_basis: Mapped[str | None] = mapped_column(String(32))
    # Set when a fork that applied this finding ends (trainyard/lifecycle.py `settle_applied_findings`):
    # the fork and whether it resolved the finding (it succeeded and has no finding of this code).
    resolved_by_job_id: Mapped[str | None] = mapped_column(String(40))
    resolved: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "code", "layer", name="uq_findings_job_code_layer"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    monitor: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    artifact_key: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_checkpoints_job_epoch"),)


class Artifact(Base):
    """An artifact's record; with the database store its bytes live in `artifact_chunks`."""

    __tablename__ = "artifacts"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    chunk_size: Mapped[int] = mapped_column(Integer)
    # "db" (bytes in `artifact_chunks`) or "object" (bytes in the object store of TRAINYARD_ARTIFACT_URL).
    location: Mapped[str] = mapped_column(String(16), default="db", server_default="db")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ArtifactChunk(Base):
    __tablename__ = "artifact_chunks"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Worker(Base):
    """Workers' heartbeats, so `/readyz` can tell whether anything will pick up a queued job."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
