"""Webhooks: what a job spec may name, where we refuse to send, and how deliveries are signed and sent.

Shared by the API (checks at submission) and the workers (delivery, workers/webhooks.py); no Flask here.

A job's `webhook` is `{"url": "https://...", "secret": "<16 to 256 characters>", "events": ["status"]}`.
The secret is required (there is no server-chosen one to learn) and is never returned by the API.
Every delivery is a POST of a JSON body with

    X-Trainyard-Delivery: whd_...           the same id on every retry of one event (deduplicate on it)
    X-Trainyard-Event: status | epoch
    X-Trainyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

Targets must be http(s) without credentials in the URL; a host that resolves to a private, loopback,
link-local, multicast, reserved or unspecified address is refused unless TRAINYARD_WEBHOOK_ALLOW_PRIVATE
is set. The address is checked again at delivery and the connection goes to the address that was
checked, so a name that later resolves elsewhere (DNS rebinding) cannot steer a delivery inside.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

EVENTS = ("status", "epoch")
SIGNATURE_HEADER = "X-Trainyard-Signature"
DELIVERY_HEADER = "X-Trainyard-Delivery"
EVENT_HEADER = "X-Trainyard-Event"
MIN_SECRET, MAX_SECRET = 16, 256
MAX_URL = 2048


class TargetRefused(Exception):
    """The URL may not be called (scheme, credentials, or a private address)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line


def parse_target(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"Not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("Must be an http:// or https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("Must not carry credentials (user:password@); sign with the secret instead.")
    if not parts.hostname:
        raise TargetRefused("Must name a host.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path)


def is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified)


def resolve(target: Target, allow_private: bool) -> list[str]:
    """The target's addresses; refused when it resolves to nothing or (unless allowed) to a private one."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"The host {target.host!r} does not resolve ({exc}).") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not allow_private:
        private = [a for a in addresses if is_private(a)]
        if private:
            raise TargetRefused(
                f"The host {target.host!r} resolves to a private, loopback or link-local address ({private[0]}); "
                "such targets are refused unless the server sets TRAINYARD_WEBHOOK_ALLOW_PRIVATE.")
    if not addresses:
        raise TargetRefused(f"The host {target.host!r} does not resolve.")
    return addresses


def validate_webhook(raw: Any, allow_private: bool) -> tuple[dict[str, Any] | None, str | None, list[dict[str, str]]]:
    """(what the job shows: url and events; the secret; errors with field paths)."""
    if not isinstance(raw, dict):
        return None, None, [{"field": "webhook", "message": "Must be an object with url, secret and events."}]
    errors: list[dict[str, str]] = []
    for key in raw:
        if key not in ("url", "secret", "events"):
            errors.append({"field": f"webhook.{key}", "message": "Unknown field."})
    url, secret, events = raw.get("url"), raw.get("secret"), raw.get("events", ["status"])
    if not isinstance(url, str) or not url:
        errors.append({"field": "webhook.url", "message": "Missing data for required field."})
    elif len(url) > MAX_URL:
        errors.append({"field": "webhook.url", "message": f"Longer than {MAX_URL} characters."})
    else:
        try:
            resolve(parse_target(url), allow_private)
        except TargetRefused as exc:
            errors.append({"field": "webhook.url", "message": str(exc)})
    if not isinstance(secret, str) or not (MIN_SECRET <= len(secret) <= MAX_SECRET):
        errors.append({"field": "webhook.secret", "message":
                       f"Required: a string of {MIN_SECRET} to {MAX_SECRET} characters, used to sign deliveries."})
    if (not isinstance(events, list) or not events or len(set(map(str, events))) != len(events)
            or any(e not in EVENTS for e in events)):
        errors.append({"field": "webhook.events",
                       "message": f"Must be a non-empty list of distinct values from: {', '.join(EVENTS)}."})
    if errors:
        return None, None, errors
    return {"url": url, "events": list(events)}, secret, []


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """What a receiver does: recompute the HMAC and refuse stale timestamps (replays)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    expected = signature(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool) -> int:
    """POST to the address checked just now (not a second lookup); returns the status code."""
    import urllib3

    target = parse_target(url)
    address = resolve(target, allow_private)[0]
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    if ":" in target.host:  # an IPv6 literal
        host_header = f"[{target.host}]" if target.port == default_port else f"[{target.host}]:{target.port}"
    t = urllib3.Timeout(connect=timeout, read=timeout)
    if target.scheme == "https":
        pool: Any = urllib3.HTTPSConnectionPool(address, target.port, timeout=t, retries=False,
                                                server_hostname=target.host, assert_hostname=target.host,
                                                cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, timeout=t, retries=False)
    try:
        resp = pool.urlopen("POST", target.path, body=body, headers={**headers, "Host": host_header},
                            redirect=False, retries=False, preload_content=True)
        return resp.status
    finally:
        pool.close()
