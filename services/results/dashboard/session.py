"""The dashboard's login: an API token once, then a signed cookie that names the token, never holds it.

The cookie is `<token_id>.<expires unix s>.<mac>`, the mac an HMAC-SHA256 keyed by the token's
stored secret digest. So no signing key of its own is needed (every API replica checks the same
cookie), a forged or altered cookie fails its mac, and a revoked token ends its sessions at
their next request: each request looks the token up again, as the API's Bearer check does."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from sqlalchemy import Engine, select

from lineguard.services.results.api.tokens import Caller, verify_token
from lineguard.services.results.schema import ApiToken

COOKIE = "lg_session"
_FORM = re.compile(r"^([0-9a-f]{12})\.([0-9]{1,12})\.([0-9a-f]{64})$")


@dataclass(frozen=True)
class Session:
    caller: Caller
    expires: int  # unix seconds


class SessionRefused(Exception):
    """Why a cookie does not sign anyone in: shown on the login page."""


def _mac(secret_sha256: str, token_id: str, expires: int) -> str:
    return hmac.new(secret_sha256.encode(), f"{token_id}.{expires}".encode(), hashlib.sha256).hexdigest()


def _token_row(engine: Engine, token_id: str) -> tuple[str, str, str] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(ApiToken.name, ApiToken.role, ApiToken.secret_sha256).where(
                ApiToken.token_id == token_id, ApiToken.revoked_at.is_(None)
            )
        ).first()
    return None if row is None else (row.name, row.role, row.secret_sha256)


def open_session(engine: Engine, token: str, lifetime_s: float, now: float | None = None) -> tuple[Session, str]:
    """Sign in with an API token: the session and its cookie value. Raises SessionRefused for a token that is not."""
    caller = verify_token(engine, token.strip())
    if caller is None:
        raise SessionRefused("that token is not valid: unknown, revoked or mistyped")
    found = _token_row(engine, caller.token_id)
    if found is None:  # revoked between the two reads
        raise SessionRefused("that token is not valid: unknown, revoked or mistyped")
    expires = int((time.time() if now is None else now) + lifetime_s)
    return Session(caller, expires), f"{caller.token_id}.{expires}.{_mac(found[2], caller.token_id, expires)}"


def read_session(engine: Engine, cookie: str | None, now: float | None = None) -> Session:
    """The session a cookie names; SessionRefused says why not (none, forged, expired, token revoked)."""
    if not cookie:
        raise SessionRefused("sign in with an API token")
    form = _FORM.match(cookie)
    if form is None:
        raise SessionRefused("the session cookie is not one this dashboard made: sign in again")
    token_id, expires_text, mac = form.groups()
    expires = int(expires_text)
    found = _token_row(engine, token_id)
    # An unknown token and a wrong mac read the same: the cookie proves nothing about which it was.
    if found is None:
        raise SessionRefused("the session's token is revoked or unknown: sign in with a valid token")
    name, role, secret_sha256 = found
    if not hmac.compare_digest(mac, _mac(secret_sha256, token_id, expires)):
        raise SessionRefused("the session cookie is not one this dashboard made: sign in again")
    if expires <= (time.time() if now is None else now):
        raise SessionRefused("the session has expired: sign in again")
    return Session(Caller(token_id, name, role), expires)
