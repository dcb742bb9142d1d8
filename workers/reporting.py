"""The trainer's reporter, backed by the database and the artifact store.

Every write is idempotent (metric rows upserted on job id + epoch, checkpoints keyed by job id + epoch),
because a delivery may be repeated. This is the one retry layer between the trainer and its sinks: the
trainer calls each method once, and every method here that writes runs its write through `_retry`, so a
sink that is briefly down is retried; a write that still fails is logged and training goes on (no method
raises for it): a lost metric row is better than a lost run. Every database write first asks
`_may_write` inside its transaction; the leased reporter (workers.resumable) answers it by locking the
job's row under its lease, so a worker that lost the job writes nothing more. The run's end is recorded by
`trainyard.lifecycle.end_run`, fenced on the attempt (`worker_id`, `attempt`), which the leased reporter sets.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select, update

from trainyard.db import Database
from trainyard.db.exports import JobExport
from trainyard import cards, lifecycle
from trainyard.db.models import Checkpoint, EpochDiagnostics, EpochMetrics, Finding, Job, utcnow
from trainyard.stop_reasons import StopReason
from trainyard.store import ArtifactStore, checkpoint_key, export_key, put_file

logger = logging.getLogger(__name__)

T = TypeVar("T")

def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _epoch_summary(values: dict[str, float | None]) -> str:
    """`loss 0.4123  val_loss 0.381  accuracy 0.9  val_accuracy 0.88  lr 2e-03  (1.20 s)`."""
    first = [k for k in ("loss", "val_loss") if k in values]
    rest = [k for k in values if k not in first and k not in ("learning_rate", "seconds")]
    parts = [f"{k} {values[k]:.4g}" if values[k] is not None else f"{k} -" for k in first + rest]
    if values.get("learning_rate") is not None:
        parts.append(f"lr {values['learning_rate']:.2e}")
    if values.get("seconds") is not None:
        parts.append(f"({values['seconds']:.2f} s)")
    return "  ".join(parts)


class DbReporter:
    def __init__(self, db: Database, store: ArtifactStore, job_id: str, *, stop_check_seconds: float = 0.5,
                 max_runtime_seconds: float | None = None, retries: int = 3,
                 epoch_hook: Callable[[int], str | None] | None = None,
                 timings: dict[str, float] | None = None) -> None:
        if not isinstance(retries, int) or retries < 1:
            raise ValueError(f"retries must be an int >= 1 (attempts per write), got {retries!r}")
        self.db = db
        # Seconds of phases timed before the trainer ran (loading the data set); the trainer's own
        # phases are added from its result.
        self.timings = dict(timings or {})
        self.store = store
        self.job_id = job_id
        self.stop_check_seconds = stop_check_seconds
        self.max_runtime_seconds = max_runtime_seconds
        self.retries = retries
        # Called once an epoch's metrics are written; a reason it returns stops the run (a sweep's median rule).
        self.epoch_hook = epoch_hook
        self._started = time.monotonic()
        self._next_check = 0.0
        self._stop: str | None = None
        self.last_epoch = 0
        # The training attempt this reporter writes for, and its worker (the leased reporter sets both):
        # artifact keys carry the attempt, and the run's end is recorded only while the attempt holds the job.
        self.attempt: int | None = None
        self.worker_id: str | None = None
        self._findings_logged: set[tuple[str, str, str, str]] = set()

    def _retry(self, what: str, fn: Callable[[], T]) -> T | None:
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except Exception:
                if attempt == self.retries:
                    logger.exception("job %s: giving up on %s after %d attempts", self.job_id, what, attempt)
                    return None
                time.sleep(0.2 * 2**attempt)
        return None

    def _may_write(self, session: Any) -> bool:
        """Whether this run may still write the job's rows, asked first in each write's transaction."""
        return True

    def started(self, info: dict[str, Any]) -> None:
        logger.info("model built: %s parameters (%s trainable); %s training and %s validation samples, "
                    "%s steps per epoch", info.get("params"), info.get("trainable_params"), info.get("train_samples"),
                    info.get("val_samples"), info.get("steps_per_epoch"))

        def write() -> None:
            with self.db.session() as s:
                if not self._may_write(s):
                    return
                s.execute(update(Job).where(Job.id == self.job_id).values(model_info=info))

        self._retry("recording the model summary", write)

    def epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        values = {k: _finite(v) for k, v in logs.items()}
        self.last_epoch = epoch
        logger.info("epoch %d: %s", epoch, _epoch_summary(values))

        def write() -> None:
            with self.db.session() as s:
                if not self._may_write(s):
                    return
                row = s.get(EpochMetrics, (self.job_id, epoch))
                if row is None:
                    s.add(EpochMetrics(job_id=self.job_id, epoch=epoch, values=values))
                else:
                    row.values = values
                s.execute(update(Job).where(Job.id == self.job_id).values(epoch=epoch))

        self._retry(f"writing epoch {epoch}'s metrics", write)
        if self.epoch_hook is not None and self._stop is None:
            try:
                self._stop = self.epoch_hook(epoch)
            except Exception:
                logger.warning("job %s: the epoch %d check failed; training continues", self.job_id, epoch,
                               exc_info=True)

    def checkpoint_saved(self, epoch: int, monitor: str, value: float, path: str, size: int, sha256: str) -> None:
        key = checkpoint_key(self.job_id, epoch, self.attempt)
        if _finite(value) is None:  # an improvement is always finite; refuse to record JSON-breaking NaN
            logger.warning("job %s: checkpoint of epoch %d has a non-finite %s; not recorded", self.job_id, epoch, monitor)
            return

        def write() -> bool:
            meta = put_file(self.store, key, path)
            if meta.sha256 != sha256:
                raise OSError(f"checkpoint of epoch {epoch} changed while it was stored")
            with self.db.session() as s:
                held = self._may_write(s)
                if held:
                    s.execute(update(Checkpoint).where(Checkpoint.job_id == self.job_id).values(is_best=False))
                    row = s.execute(
                        select(Checkpoint).where(Checkpoint.job_id == self.job_id, Checkpoint.epoch == epoch)
                    ).scalar_one_or_none()
                    if row is None:
                        row = Checkpoint(job_id=self.job_id, epoch=epoch)
                        s.add(row)
                    previous = row.artifact_key  # an earlier attempt's checkpoint of this epoch, if any
                    row.monitor, row.value, row.artifact_key = monitor, float(value), key
                    row.size_bytes, row.sha256, row.is_best = meta.size, meta.sha256, True
                    s.execute(
                        update(Job).where(Job.id == self.job_id)
                        .values(best_monitor=monitor, best_value=_finite(value), best_epoch=epoch)
                    )
            if not held:
                self.store.delete(key)  # not this run's to record: only its own key is touched
                return False
            if previous and previous != key:
                self.store.delete(previous)
            return True

        if self._retry(f"storing epoch {epoch}'s checkpoint", write):
            logger.info("checkpoint of epoch %d stored: %s %.4g, %d bytes", epoch, monitor, value, size)

    def export_saved(self, fmt: str, epoch: int, path: str, size: int, sha256: str) -> None:
        """Store an export of epoch `epoch`'s checkpoint; one row per job and format, replaced on a re-run."""
        key = export_key(self.job_id, fmt, epoch, self.attempt)

        def write() -> None:
            meta = put_file(self.store, key, path)
            if meta.sha256 != sha256:
                raise OSError(f"the {fmt} export changed while it was stored")
            with self.db.session() as s:
                if not self._may_write(s):
                    self.store.delete(key)  # not this run's to record
                    return
                row = s.get(JobExport, (self.job_id, fmt))
                previous = row.artifact_key if row is not None else None
                if row is None:
                    row = JobExport(job_id=self.job_id, format=fmt)
                    s.add(row)
                row.epoch, row.artifact_key, row.size_bytes, row.sha256 = epoch, key, meta.size, meta.sha256
                row.created_at = utcnow()
            if previous and previous != key:
                self.store.delete(previous)

        self._retry(f"storing the {fmt} export", write)

    def model_card(self, facts: dict[str, Any]) -> dict[str, Any]:
        """The card the exports carry: the job's card from its rows, with the trainer's `facts` (best,
        test metrics, normalisation, phases) standing in for what `finished` records later."""
        facts = dict(facts)
        if facts.get("best") is not None:
            facts["best"] = {**facts["best"], "value": _finite(facts["best"].get("value"))}
        if facts.get("test_metrics") is not None:
            facts["test_metrics"] = {k: _finite(v) for k, v in facts["test_metrics"].items()} or None
        facts["phases"] = {**self.timings, **(facts.get("phases") or {})}
        with self.db.read_session() as s:
            job = s.get(Job, self.job_id)
            if job is None:
                raise LookupError(f"job {self.job_id} is gone")
            return cards.model_card(s, job, facts)

    def should_stop(self) -> str | None:
        if self._stop is not None:
            return self._stop
        now = time.monotonic()
        if self.max_runtime_seconds is not None and now - self._started >= self.max_runtime_seconds:
            self._stop = StopReason.MAX_RUNTIME.value
            return self._stop
        # Called between batches: look at the database at most every `stop_check_seconds`.
        if now < self._next_check:
            return None
        self._next_check = now + self.stop_check_seconds
        try:
            with self.db.session() as s:
                if s.execute(select(Job.cancel_requested).where(Job.id == self.job_id)).scalar_one_or_none():
                    self._stop = StopReason.CANCELLED.value
        except Exception:
            logger.warning("job %s: could not check for cancellation; will retry", self.job_id, exc_info=True)
        return self._stop

    def diagnostics(self, epoch: int, record: dict[str, Any]) -> None:
        variables = [{k: (_finite(v) if k not in ("layer", "name") else v) for k, v in row.items()}
                     for row in record.get("variables") or []]
        learning_rate, loss = _finite(record.get("learning_rate")), _finite(record.get("loss"))

        def write() -> None:
            with self.db.session() as s:
                if not self._may_write(s):
                    return
                row = s.get(EpochDiagnostics, (self.job_id, epoch))
                if row is None:
                    s.add(EpochDiagnostics(job_id=self.job_id, epoch=epoch, learning_rate=learning_rate,
                                           loss=loss, variables=variables))
                else:
                    row.learning_rate, row.loss, row.variables = learning_rate, loss, variables

        self._retry(f"writing epoch {epoch}'s diagnostics", write)

    def findings(self, items: list[dict[str, Any]]) -> None:
        """Upsert on (job, code, layer); "" stands for a finding about the whole model."""
        if not items:
            return
        for item in items:
            # Once, and again only when what it says to do changes (severity or suggested change): the
            # message's numbers move every epoch and are in the diagnostics anyway.
            key = (item["code"], item.get("layer") or "", item["severity"],
                   json.dumps(item.get("suggested_change"), sort_keys=True, default=str))
            if key not in self._findings_logged:
                self._findings_logged.add(key)
                logger.info("finding %s (%s)%s: %s", item["code"], item["severity"],
                            f" in {item['layer']}" if item.get("layer") else "", item["message"])

        def write() -> None:
            with self.db.session() as s:
                if not self._may_write(s):
                    return
                existing = {(f.code, f.layer): f for f in s.execute(
                    select(Finding).where(Finding.job_id == self.job_id)).scalars()}
                now = utcnow()
                for item in items:
                    layer = item.get("layer") or ""
                    row = existing.get((item["code"], layer))
                    if row is None:
                        row = existing[(item["code"], layer)] = Finding(
                            job_id=self.job_id, code=item["code"], layer=layer, created_at=now)
                        s.add(row)
                    row.severity, row.message = item["severity"], item["message"]
                    row.evidence = item.get("evidence") or {}
                    row.epoch, row.suggested_change = item.get("epoch"), item.get("suggested_change")
                    row.suggested_change_basis = item.get("suggested_change_basis")
                    row.updated_at = now

        self._retry("recording findings", write)

    def finished(self, result: Any) -> None:
        self._record_end(result, lifecycle.end_of_run(result, self.last_epoch))

    def _record_end(self, result: Any, end: dict[str, Any]) -> None:
        """Write the job's end (`end`: its status, and error code and message when it failed, as
        `lifecycle.end_of_run` or `lifecycle.failure` builds it) with the result."""
        has_best = result.best_epoch is not None
        values: dict[str, Any] = {
            "test_metrics": {k: _finite(v) for k, v in (result.test_metrics or {}).items()} or None,
            "best_monitor": result.monitor,
        }
        if has_best:
            values.update(best_epoch=result.best_epoch, best_value=_finite(result.best_value))

        def write() -> bool:
            with self.db.session() as s:
                if not self._may_write(s):
                    return False
                job = lifecycle.end_run(s, self.job_id, self.worker_id, self.attempt, end,
                                        stop_reason=result.stop_reason, **values)
                if job is None:
                    return False
                info = dict(job.model_info or {})
                if result.normalization is not None:
                    info["normalization"] = result.normalization
                timings = {**self.timings, **(getattr(result, "timings", None) or {})}
                if timings:
                    info["timings"] = timings
                job.model_info = info
            return True

        status = end["status"]
        if self._retry("recording the job's end", write):
            error = f"; {end['error_code']}: {end['error_message']}" if status == "failed" else ""
            logger.log(logging.INFO if status == "succeeded" else logging.WARNING,
                       "finished: %s (%s) after %d epochs; best %s %s at epoch %s%s", status, result.stop_reason,
                       result.epochs_run, result.monitor, values.get("best_value"), result.best_epoch, error)
