"""Signed web-session cookies: ``<token id>.<expiry>.<HMAC-SHA256 under secret_key>``.

The cookie never carries the API token itself; each request re-checks that the token behind it is
still valid (not revoked or expired, user not disabled).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from medcycle.errors import AuthError

COOKIE_NAME = "medcycle_session"
SESSION_SECONDS = 12 * 3600


def _mac(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def sign_session(secret: str, token_id: str, *, ttl: int = SESSION_SECONDS, now: float | None = None) -> str:
    expires = int((now or time.time()) + ttl)
    payload = f"{token_id}.{expires}"
    return f"{payload}.{_mac(secret, payload)}"


def verify_session(secret: str, cookie: str, *, now: float | None = None) -> str:
    """The token id inside a valid, unexpired cookie; AuthError otherwise."""
    parts = (cookie or "").split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        raise AuthError("the session cookie is malformed", hint="Log in again at /login.")
    token_id, expires, mac = parts
    if not hmac.compare_digest(mac, _mac(secret, f"{token_id}.{expires}")):
        raise AuthError("the session cookie is not valid", hint="Log in again at /login.")
    if int(expires) < (now or time.time()):
        raise AuthError("the session has expired", hint="Log in again at /login.")
    return token_id
