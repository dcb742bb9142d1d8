"""The sweeps table: a search over job specs whose trials are ordinary jobs (`jobs.sweep_id`)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trainyard.db.models import Base, JsonType, new_id, utcnow

SWEEP_STATUSES = ("running", "completed", "failed", "cancelled")


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("swp"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="running")
    # The normalised base job spec every trial starts from.
    base: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # search, objective, max_trials, parallelism, early_stopping and seed, with every default filled in.
    config: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # Sweeps accepted before Optuna chose the values (migration 0013): every trial's values, drawn up front
    # ([{path: value}]); [] since, the values being asked for as trials are submitted.
    plan: Mapped[list[Any]] = mapped_column(JsonType)
    # The Optuna study's system attributes (trainyard/sweeps/study.py); only changed under the row's lock.
    study_attrs: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # Optuna's parameter importances {path: share}, refreshed by the worker whose trial ended (not the API:
    # optuna.importance imports scikit-learn); null until enough trials completed.
    importance: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # Trials created so far; the next one is trial number trials_submitted. Only changed under the row's lock.
    trials_submitted: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_sweeps_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_sweeps_status", "status"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_sweeps_tenant_idempotency_key"),
    )
