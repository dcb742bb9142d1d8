"""The one way a time is written in what users read (API bodies, cards, webhooks): ISO 8601 in UTC with `Z`."""
from __future__ import annotations

from datetime import datetime, timezone


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:  # SQLite hands back naive datetimes; they were written as UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
