"""The Flask application factory."""
from __future__ import annotations

import logging

import click
from flask import Flask

from service.api import register_api
from service.auth import TokenCache
from service.errors import register_error_handlers
from service.eventhub import EventHub
from service.ratelimit import init_rate_limits
from service.services import EXTENSION, Services, services
from trainyard.db import Database
from trainyard.queue import JobSender, make_celery
from trainyard.settings import Settings
from trainyard.store import store_from_settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:

    settings = settings or Settings.from_env()
    app = Flask("service")
    # Uploads are streamed and capped per route; JSON bodies are capped in the jobs module.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + 1024 * 1024
    app.json.sort_keys = False
    db = Database(settings.database_url)
    celery = make_celery(settings)
    app.extensions[EXTENSION] = Services(
        settings=settings, db=db, store=store_from_settings(db, settings), celery=celery,
        tokens=TokenCache(settings.token_cache_seconds), send=JobSender(celery, db),
    )
    app.extensions["trainyard_events"] = EventHub(db, settings.events_poll_seconds)
    register_error_handlers(app)
    # Before the blueprints: the rate limit is checked before the token is looked up.
    init_rate_limits(app, settings)
    register_api(app)
    _register_cli(app)
    return app


def _register_cli(app: Flask) -> None:
    from service.auth import create_token, list_tokens, revoke_token
    from trainyard.db import upgrade_schema

    tokens = click.Group("tokens", help="Create, list and revoke API tokens.")

    @tokens.command("create")
    @click.option("--tenant", required=True, help="Tenant name; created if it does not exist.")
    @click.option("--quiet", is_flag=True, help="Print only the token.")
    def _create(tenant: str, quiet: bool) -> None:
        with services().db.session() as s:
            issued = create_token(s, tenant)
        if quiet:
            click.echo(issued.token)
        else:
            click.echo(f"token for tenant {tenant!r} (shown once, store it now):\n{issued.token}")

    @tokens.command("list")
    @click.option("--tenant", default=None)
    def _list(tenant: str | None) -> None:
        with services().db.session() as s:
            for tok, name in list_tokens(s, tenant):
                state = "revoked" if tok.revoked_at else "active"
                click.echo(f"{tok.id}\t{name}\t{tok.prefix}...\t{tok.created_at:%Y-%m-%d %H:%M}\t{state}")

    @tokens.command("revoke")
    @click.argument("token_id")
    def _revoke(token_id: str) -> None:
        with services().db.session() as s:
            if not revoke_token(s, token_id):
                raise click.ClickException(f"no active token with id {token_id}")
        click.echo(f"revoked {token_id}")

    @tokens.command("check")
    @click.argument("token")
    def _check(token: str) -> None:
        """Exit 0 when TOKEN is valid (used by `make run` to reuse var/dev-token)."""
        from service.auth import authenticate

        with services().db.session() as s:
            if authenticate(s, token.strip()) is None:
                raise click.ClickException("token is not valid here")

    @app.cli.command("migrate")
    def _migrate() -> None:
        """Apply all migrations (alembic upgrade head)."""
        upgrade_schema(services().settings.database_url)
        click.echo("database is at the latest schema")

    app.cli.add_command(tokens)
