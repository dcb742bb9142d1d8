"""Bearer tokens: each belongs to a tenant, is shown once at creation, and is stored only as its sha256."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.db import Database
from trainyard.db.models import ApiToken, Tenant, utcnow

TOKEN_PREFIX = "ty_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    tenant_name: str
    token_id: str


@dataclass(frozen=True)
class IssuedToken:
    token: str
    token_id: str
    tenant_id: str


def create_token(session: Session, tenant_name: str) -> IssuedToken:
    tenant = session.execute(select(Tenant).where(Tenant.name == tenant_name)).scalar_one_or_none()
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(tenant_id=tenant.id, token_hash=hash_token(secret), prefix=secret[:10])
    session.add(row)
    session.flush()
    return IssuedToken(token=secret, token_id=row.id, tenant_id=tenant.id)


def authenticate(session: Session, token: str) -> Principal | None:
    digest = hash_token(token)
    row = session.execute(
        select(ApiToken, Tenant.name).join(Tenant, Tenant.id == ApiToken.tenant_id).where(ApiToken.token_hash == digest)
    ).first()
    if row is None:
        return None
    tok, tenant_name = row
    # The index lookup finds the row; the constant-time compare keeps the final check free of timing leaks.
    if not hmac.compare_digest(tok.token_hash, digest) or tok.revoked_at is not None:
        return None
    return Principal(tenant_id=tok.tenant_id, tenant_name=tenant_name, token_id=tok.id)


class TokenCache:
    """Principals of tokens seen recently, keyed by the token's sha256, kept for `ttl` seconds.

    Status polls arrive thousands of times a second; a hit answers without the database. The price is
    that a token revoked in another process (the CLI) keeps working in an API process that cached it
    for at most `ttl` seconds. Unknown and revoked tokens are never cached, so a new token works at
    once. `ttl` 0 turns the cache off.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self.discard(digest)
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                # Bounded memory: dropping everything is rare (it needs max_entries live tokens) and safe.
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self.ttl, principal)

    def discard(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def authenticate_cached(db: Database, cache: TokenCache, token: str) -> Principal | None:
    """`authenticate`, answered from `cache` while the token's entry is fresh."""
    digest = hash_token(token)
    principal = cache.get(digest)
    if principal is None:
        with db.read_session() as s:
            principal = authenticate(s, token)
        if principal is not None:
            cache.put(digest, principal)
    return principal


def revoke_token(session: Session, token_id: str) -> bool:
    tok = session.get(ApiToken, token_id)
    if tok is None or tok.revoked_at is not None:
        return False
    tok.revoked_at = utcnow()
    return True


def list_tokens(session: Session, tenant_name: str | None = None) -> list[tuple[ApiToken, str]]:
    stmt = select(ApiToken, Tenant.name).join(Tenant, Tenant.id == ApiToken.tenant_id).order_by(ApiToken.created_at)
    if tenant_name:
        stmt = stmt.where(Tenant.name == tenant_name)
    return [(t, n) for t, n in session.execute(stmt).all()]

