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

from service.spec.limits import SpecLimits


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
    broker_polling_interval: float = 0.05
    # Ceilings on what one job spec may ask for; defaults suit a shared GPU box.
    spec_limits: SpecLimits = field(default_factory=SpecLimits)
    work_dir: Path = field(default=Path("var/work"))
    log_level: str = "INFO"
    # How long an API process trusts a token it has checked; a revoked token is refused within this.
    token_cache_seconds: float = 5.0

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
            broker_polling_interval=_float(env, "TRAINYARD_BROKER_POLLING_INTERVAL", 0.05, minimum=0.01),
            spec_limits=SpecLimits(
                max_layers=_int(env, "TRAINYARD_MAX_LAYERS", SpecLimits.max_layers, minimum=1),
                max_params=_int(env, "TRAINYARD_MAX_PARAMS", SpecLimits.max_params, minimum=1),
                max_epochs=_int(env, "TRAINYARD_MAX_EPOCHS", SpecLimits.max_epochs, minimum=1),
                max_batch_size=_int(env, "TRAINYARD_MAX_BATCH_SIZE", SpecLimits.max_batch_size, minimum=1),
                max_runtime_seconds=_int(env, "TRAINYARD_MAX_RUNTIME_SECONDS", SpecLimits.max_runtime_seconds,
                                         minimum=1),
            ),
            work_dir=Path(env.get("TRAINYARD_WORK_DIR") or (var_dir / "work")).resolve(),
            log_level=(env.get("TRAINYARD_LOG_LEVEL") or "INFO").upper(),
            token_cache_seconds=_float(env, "TRAINYARD_TOKEN_CACHE_SECONDS", 5.0, minimum=0.0),
        )
        return settings
