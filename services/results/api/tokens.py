"""API tokens: `lgt_<id>_<secret>`, of which only the secret's sha256 is stored.

The secret is 32 random bytes, so a plain sha256 is as good as a slow hash: nothing can be
guessed from it. The id is public (it names the token in lists and logs and keys its rate
limit); a token is valid until revoked."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select, update

from lineguard.services.results.schema import ROLES, ApiToken

PREFIX = "lgt"
_FORM = re.compile(rf"^{PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")


@dataclass(frozen=True)
class Caller:
    token_id: str
    name: str
    role: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(engine: Engine, role: str, name: str) -> str:
    """Make a token with `role` and return it: the only time it is seen whole."""
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if not name or len(name) > ApiToken.name.type.length:
        raise ValueError(f"name: 1 to {ApiToken.name.type.length} characters")
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(ApiToken).values(token_id=token_id, name=name, role=role, secret_sha256=_digest(secret)))
    return f"{PREFIX}_{token_id}_{secret}"


def revoke_token(engine: Engine, token_id: str) -> bool:
    """Revoke the token `token_id`; False when there is no valid token of that id."""
    with engine.begin() as conn:
        done = conn.execute(
            update(ApiToken)
            .where(ApiToken.token_id == token_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
            .returning(ApiToken.token_id)
        ).first()
    return done is not None


def verify_token(engine: Engine, token: str) -> Caller | None:
    """The caller `token` names, or None: malformed, unknown, revoked or a wrong secret are all the same to a caller."""
    form = _FORM.match(token)
    if form is None:
        return None
    token_id, secret = form.groups()
    with engine.connect() as conn:
        row = conn.execute(
            select(ApiToken.name, ApiToken.role, ApiToken.secret_sha256).where(
                ApiToken.token_id == token_id, ApiToken.revoked_at.is_(None)
            )
        ).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        return None
    return Caller(token_id, row.name, row.role)


def list_tokens(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(ApiToken.token_id, ApiToken.name, ApiToken.role, ApiToken.created_at, ApiToken.revoked_at).order_by(
                ApiToken.created_at
            )
        ).all()
    return [dict(r._mapping) for r in rows]
