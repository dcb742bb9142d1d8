"""Typed settings, read from `TRAINYARD_*` environment variables in this one module.

Every variable is documented in the README's settings table. With no variables set the service runs on
embedded defaults: SQLite for data and artifacts, kombu's SQLAlchemy transport on SQLite as the broker,
everything under `var/`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trainyard import resources
from trainyard.names import EXPORT_FORMATS
from trainyard.spec.limits import SpecLimits


class SettingsError(ValueError):
    """A setting is present but unusable; raised at start-up so the process never half-starts."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or default).strip().lower()
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _git_commit(env: Mapping[str, str]) -> str | None:
    value = (env.get("TRAINYARD_GIT_COMMIT") or "").strip()
    if value and not (len(value) <= 64 and all(c in "0123456789abcdefABCDEF" for c in value)):
        raise SettingsError(f"TRAINYARD_GIT_COMMIT must be a hexadecimal commit id, got {value!r}")
    return value.lower() or None


def _optional_int(env: Mapping[str, str], name: str, maximum: int) -> int | None:
    if not env.get(name):
        return None
    value = _int(env, name, 0)
    if value > maximum:
        # The router holds this many bytes in memory per upload to decide where it goes.
        raise SettingsError(f"{name} must be at most {maximum}, got {value}")
    return value


def _export_formats(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of export formats, kept in the catalogue's order; `none` (or empty) for none."""
    raw = env.get(name)
    if raw is None:
        return EXPORT_FORMATS
    asked = {part.strip() for part in raw.split(",") if part.strip()} - {"none"}
    unknown = sorted(asked - set(EXPORT_FORMATS))
    if unknown:
        raise SettingsError(f"{name} lists {', '.join(unknown)}; the formats are {', '.join(EXPORT_FORMATS)} "
                            "(or none)")
    return tuple(fmt for fmt in EXPORT_FORMATS if fmt in asked)


def _classes(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return resources.parse_classes(raw, name)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    broker_url: str
    # "db" keeps artifacts as chunked rows in the database; anything else is an fsspec URL.
    artifact_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 512 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    # Data sets stay small enough to train in a worker's memory; decompressed .npz members are capped.
    max_dataset_bytes: int = 2 * 1024 * 1024 * 1024
    worker_heartbeat_seconds: float = 5.0
    worker_stale_seconds: float = 30.0
    # A cancelled job whose training thread is still stuck (in one native call) this long after the request
    # ends cancelled, and its worker process exits for its supervisor to restart (workers/runtime.py).
    worker_cancel_exit_seconds: float = 10.0
    broker_polling_interval: float = 0.05
    # Ceilings on what one job spec may ask for; defaults suit a shared GPU box.
    spec_limits: SpecLimits = field(default_factory=SpecLimits)
    # Trials one sweep may run (each trial's spec is validated when the sweep is accepted).
    max_sweep_trials: int = 200
    # Fair use: jobs one tenant may have queued or running at once (more answers 429).
    max_active_jobs_per_tenant: int = 50
    # ...and of those, how many may train at once (workers defer the rest): one tenant cannot take every GPU.
    max_running_jobs_per_tenant: int = 4
    # Requests per token (per client address without one), in the `limits` notation; "" turns it off.
    # Generous by default so status polling and the benchmarks are never throttled.
    rate_limit: str = "100000 per minute"
    # Stricter, and counted on top: submits (jobs and sweeps share one count) and uploads, per token.
    rate_limit_submit: str = "600 per minute"
    rate_limit_uploads: str = "60 per minute"
    # Where request counts live: shared Redis in production, the process's memory otherwise.
    ratelimit_storage_url: str = "memory://"
    work_dir: Path = field(default=Path("var/work"))
    # Bytes of uploaded data sets a worker machine keeps in work_dir/datasets; 0 fetches every time.
    dataset_cache_bytes: int = 4 * 1024**3
    log_level: str = "INFO"
    # "text" for people at a terminal, "json" (one object per line) for log collectors.
    log_format: str = "text"
    # Event streams: a keep-alive comment (and a re-read of the job's events) after this much quiet;
    # on SQLite, how often each API process looks for new events.
    events_keepalive_seconds: float = 15.0
    events_poll_seconds: float = 0.5
    # GET /metrics: on by default and unauthenticated (scrapers rarely hold API tokens); a token, when
    # set, must be sent as a bearer token.
    metrics_enabled: bool = True
    metrics_token: str | None = None
    # Webhooks: private, loopback and link-local targets are refused unless allowed (a test or a
    # private network); each delivery is tried up to `webhook_max_attempts` times with exponential backoff.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 5.0
    webhook_max_attempts: int = 8
    webhook_backoff_seconds: float = 2.0
    webhook_poll_seconds: float = 1.0
    # With an object store: artifacts up to this size stay in the database, larger ones go to the store.
    artifact_db_max_bytes: int | None = None
    # An S3-compatible server (MinIO, Ceph, moto) instead of AWS for s3:// artifact URLs.
    s3_endpoint_url: str | None = None
    # How many GPUs this worker process trains on, and the resource classes whose queues it consumes.
    worker_gpus: int = 0
    worker_classes: tuple[str, ...] = ("cpu",)
    # Threads each of TensorFlow's pools (intra-op and inter-op) may use in a worker process (bin/worker also
    # gives OpenMP/OpenBLAS this many); 0 leaves TensorFlow's default, one per core. Set it where several
    # workers (or other busy processes) share a machine's cores: pools sized to the whole machine in every
    # process hand each op's shards to threads that wait for a time slice.
    worker_threads: int = 0
    # How long an API process trusts a token it has checked; a revoked token is refused within this.
    token_cache_seconds: float = 5.0
    # The git commit a deployment was built from, for jobs' reproducibility record (an image has no .git).
    git_commit: str | None = None
    # Worker: what a job keeps once it succeeded (trainyard/retention.py): "best" drops its other checkpoints
    # and its resume backup, "all" keeps every one.
    keep_checkpoints: str = "best"
    # What a worker exports of a job's best checkpoint when the job succeeds (each costs its time and bytes).
    export_formats: tuple[str, ...] = EXPORT_FORMATS

    @property
    def is_embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        var_dir = Path(env.get("TRAINYARD_VAR_DIR") or "var").resolve()
        database_url = env.get("TRAINYARD_DATABASE_URL") or f"sqlite:///{var_dir / 'trainyard.sqlite3'}"
        broker_url = env.get("TRAINYARD_BROKER_URL") or f"sqla+sqlite:///{var_dir / 'broker.sqlite3'}"
        artifact_url = env.get("TRAINYARD_ARTIFACT_URL") or "db"
        for name, value in (("TRAINYARD_DATABASE_URL", database_url),):
            if not (value.startswith("sqlite") or value.startswith("postgresql")):
                raise SettingsError(f"{name} must be a sqlite:// or postgresql+psycopg:// URL, got {value!r}")
        ratelimit_storage_url = env.get("TRAINYARD_RATELIMIT_STORAGE_URL") or (
            broker_url if broker_url.startswith(("redis://", "rediss://")) else "memory://")
        rate_limit = env.get("TRAINYARD_RATE_LIMIT")
        if rate_limit is None:
            rate_limit = cls.rate_limit
        rate_limit_submit = env.get("TRAINYARD_RATE_LIMIT_SUBMIT")
        rate_limit_uploads = env.get("TRAINYARD_RATE_LIMIT_UPLOADS")
        worker_gpus = _int(env, "TRAINYARD_WORKER_GPUS", 0)
        settings = cls(
            var_dir=var_dir,
            database_url=database_url,
            broker_url=broker_url,
            artifact_url=artifact_url,
            host=env.get("TRAINYARD_HOST") or "127.0.0.1",
            port=_int(env, "TRAINYARD_PORT", 8000, minimum=1),
            max_upload_bytes=_int(env, "TRAINYARD_MAX_UPLOAD_BYTES", 512 * 1024 * 1024, minimum=1024),
            max_json_bytes=_int(env, "TRAINYARD_MAX_JSON_BYTES", 1024 * 1024, minimum=1024),
            max_dataset_bytes=_int(env, "TRAINYARD_MAX_DATASET_BYTES", 2 * 1024**3, minimum=1024),
            worker_heartbeat_seconds=_float(env, "TRAINYARD_WORKER_HEARTBEAT_SECONDS", 5.0, minimum=0.1),
            worker_stale_seconds=_float(env, "TRAINYARD_WORKER_STALE_SECONDS", 30.0, minimum=1.0),
            worker_cancel_exit_seconds=_float(env, "TRAINYARD_WORKER_CANCEL_EXIT_SECONDS", 10.0, minimum=1.0),
            broker_polling_interval=_float(env, "TRAINYARD_BROKER_POLLING_INTERVAL", 0.05, minimum=0.01),
            spec_limits=SpecLimits(
                max_layers=_int(env, "TRAINYARD_MAX_LAYERS", SpecLimits.max_layers, minimum=1),
                max_params=_int(env, "TRAINYARD_MAX_PARAMS", SpecLimits.max_params, minimum=1),
                max_epochs=_int(env, "TRAINYARD_MAX_EPOCHS", SpecLimits.max_epochs, minimum=1),
                max_batch_size=_int(env, "TRAINYARD_MAX_BATCH_SIZE", SpecLimits.max_batch_size, minimum=1),
                max_runtime_seconds=_int(env, "TRAINYARD_MAX_RUNTIME_SECONDS", SpecLimits.max_runtime_seconds,
                                         minimum=1),
                max_step_flops=_int(env, "TRAINYARD_MAX_STEP_FLOPS", SpecLimits.max_step_flops, minimum=1),
                max_step_activations=_int(env, "TRAINYARD_MAX_STEP_ACTIVATIONS", SpecLimits.max_step_activations,
                                          minimum=1),
                max_recurrent_steps=_int(env, "TRAINYARD_MAX_RECURRENT_STEPS", SpecLimits.max_recurrent_steps,
                                         minimum=1),
                max_init_flops=_int(env, "TRAINYARD_MAX_INIT_FLOPS", SpecLimits.max_init_flops, minimum=1),
                resource_classes=_classes(env, "TRAINYARD_RESOURCE_CLASSES", SpecLimits.resource_classes),
            ),
            max_sweep_trials=_int(env, "TRAINYARD_MAX_SWEEP_TRIALS", 200, minimum=1),
            max_active_jobs_per_tenant=_int(env, "TRAINYARD_MAX_ACTIVE_JOBS_PER_TENANT", 50, minimum=1),
            max_running_jobs_per_tenant=_int(env, "TRAINYARD_MAX_RUNNING_JOBS_PER_TENANT", 4, minimum=1),
            rate_limit=rate_limit.strip(),
            rate_limit_submit=(cls.rate_limit_submit if rate_limit_submit is None else rate_limit_submit).strip(),
            rate_limit_uploads=(cls.rate_limit_uploads if rate_limit_uploads is None else rate_limit_uploads).strip(),
            ratelimit_storage_url=ratelimit_storage_url,
            work_dir=Path(env.get("TRAINYARD_WORK_DIR") or (var_dir / "work")).resolve(),
            dataset_cache_bytes=_int(env, "TRAINYARD_DATASET_CACHE_BYTES", 4 * 1024**3, minimum=0),
            log_level=(env.get("TRAINYARD_LOG_LEVEL") or "INFO").upper(),
            log_format=_choice(env, "TRAINYARD_LOG_FORMAT", "text", ("text", "json")),
            events_keepalive_seconds=_float(env, "TRAINYARD_EVENTS_KEEPALIVE_SECONDS", 15.0, minimum=0.5),
            events_poll_seconds=_float(env, "TRAINYARD_EVENTS_POLL_SECONDS", 0.5, minimum=0.05),
            metrics_enabled=_bool(env, "TRAINYARD_METRICS_ENABLED", True),
            metrics_token=env.get("TRAINYARD_METRICS_TOKEN") or None,
            webhook_allow_private=_bool(env, "TRAINYARD_WEBHOOK_ALLOW_PRIVATE", False),
            webhook_timeout_seconds=_float(env, "TRAINYARD_WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1),
            webhook_max_attempts=_int(env, "TRAINYARD_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1),
            webhook_backoff_seconds=_float(env, "TRAINYARD_WEBHOOK_BACKOFF_SECONDS", 2.0, minimum=0.01),
            webhook_poll_seconds=_float(env, "TRAINYARD_WEBHOOK_POLL_SECONDS", 1.0, minimum=0.05),
            artifact_db_max_bytes=_optional_int(env, "TRAINYARD_ARTIFACT_DB_MAX_BYTES", maximum=256 * 1024 * 1024),
            s3_endpoint_url=env.get("TRAINYARD_S3_ENDPOINT_URL") or None,
            worker_gpus=worker_gpus,
            worker_threads=_int(env, "TRAINYARD_WORKER_THREADS", 0, minimum=0),
            worker_classes=_classes(env, "TRAINYARD_WORKER_CLASSES", (resources.resource_class(worker_gpus),)),
            token_cache_seconds=_float(env, "TRAINYARD_TOKEN_CACHE_SECONDS", 5.0, minimum=0.0),
            git_commit=_git_commit(env),
            keep_checkpoints=_choice(env, "TRAINYARD_KEEP_CHECKPOINTS", "best", ("best", "all")),
            export_formats=_export_formats(env, "TRAINYARD_EXPORT_FORMATS"),
        )
        for cls in settings.worker_classes:
            if (resources.gpus_of(cls) or 0) > worker_gpus:
                raise SettingsError(f"TRAINYARD_WORKER_CLASSES lists {cls}, but TRAINYARD_WORKER_GPUS is {worker_gpus}: "
                                    "a worker serves only classes that fit on its GPUs")
        return settings
