"""Passwords, session tokens and CSRF tokens of the review app.

- Passwords: argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile), PHC strings in
  `users.password_hash`; a hash made with older parameters is upgraded at the next sign-in.
- Sessions: a random 256-bit token in the `foley_session` cookie (HttpOnly, SameSite=Lax,
  Secure when the app is served over https); the database keeps only its SHA-256, so a
  leaked database does not hand out sessions. Sessions live in the database, so they survive
  a restart of the app and work across several app processes.
- CSRF: a random per-session token, sent back by the page in the `X-CSRF-Token` header (or a
  `csrf_token` form field) on every state change and compared in constant time. The sign-in
  form, which has no session yet, uses a double-submit cookie.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

SESSION_COOKIE = "foley_session"
LOGIN_CSRF_COOKIE = "foley_login_csrf"
CSRF_HEADER = "x-csrf-token"
MIN_PASSWORD = 8

_hasher = PasswordHasher()
# Verifying against this keeps the time of "no such user" equal to "wrong password".
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class WeakPassword(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"passwords need at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
