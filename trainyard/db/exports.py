"""Exports of a job's model made by the worker (its serving model in each format), one per format.

Kept apart from `checkpoints`: an export is derived from one checkpoint (`epoch`), is made once when the
job ends, and is served only while that checkpoint is still the job's best.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from trainyard.db.models import Base, utcnow
from trainyard.names import EXPORT_FORMATS

__all__ = ["EXPORT_FORMATS", "JobExport"]


class JobExport(Base):
    __tablename__ = "job_exports"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    format: Mapped[str] = mapped_column(String(16), primary_key=True)
    # The checkpoint it was made from.
    epoch: Mapped[int] = mapped_column(Integer)
    artifact_key: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
