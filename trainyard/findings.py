"""How findings are ordered wherever users read a list of them (the diagnostics API, the model card)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SEVERITIES = ("error", "warning", "info")
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


def ranked(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings (as dicts with severity, epoch, code and layer), most severe first, then by epoch, code and
    layer."""
    return sorted(items, key=lambda f: (_RANK.get(f["severity"], len(SEVERITIES)), f["epoch"] or 0, f["code"],
                                        f["layer"] or ""))
