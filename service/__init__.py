"""Trainyard's API service.

This package's top level imports nothing heavy: `trainyard.spec`, `trainyard.db` and `trainyard.store` are shared
with the workers, which must not pull in Flask, and the API must not pull in TensorFlow.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from trainyard.settings import Settings


def create_app(settings: "Settings | None" = None) -> "Flask":
    """App factory; `flask --app service` and gunicorn's `service:create_app()` find it here."""
    from service.app import create_app as _create_app

    return _create_app(settings)
