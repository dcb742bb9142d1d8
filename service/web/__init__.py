"""The dashboard: static HTML, CSS and JavaScript served at `/` (assets under `/ui/`), no build step.

The page holds no secrets and needs no token to load; it asks for one and sends it as a bearer token on
every API call, exactly as any other client. A strict Content-Security-Policy allows only this origin's
scripts, styles and API, so nothing the API returns (job names, finding messages) can run as code.
"""
from __future__ import annotations

from flask import Blueprint, Response, send_from_directory

bp = Blueprint("web", __name__, static_folder="static", static_url_path="/ui")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@bp.get("/")
def index() -> Response:
    resp = send_from_directory(bp.static_folder, "index.html", max_age=0)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp
