"""What request handlers need (settings, database, artifact store, Celery, token cache, job sender), and how a view
finds them for the app that serves the request.

Its own module so the dependency goes one way: `service.app` builds a `Services` and registers the API;
the views (`service.api`) read it through `services()` and never import the app.
"""
from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app

from service.auth import TokenCache
from trainyard.db import Database
from trainyard.queue import JobSender
from trainyard.settings import Settings
from trainyard.store import ArtifactStore

EXTENSION = "trainyard"


@dataclass
class Services:
    """Built once per app (and so once per gunicorn worker) by `service.app.create_app`."""

    settings: Settings
    db: Database
    store: ArtifactStore
    celery: Celery
    tokens: TokenCache
    # Sends a job's message to its queue (submissions, sweeps' trials): the one sender (trainyard/queue.py).
    send: JobSender


def services() -> Services:
    """The current app's services (inside a request, or an app context such as a CLI command)."""
    return current_app.extensions[EXTENSION]
