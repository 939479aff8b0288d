"""Passwords, for signing in (`heroku login -i`): salted scrypt hashes, slow on purpose.

People choose passwords, so unlike API keys (256 random bits, a fast hash is enough) a stolen
hash must be costly to guess from: scrypt with a random salt per password, its parameters
stored with it so they can be raised later without breaking old hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from waka.domain.errors import InvalidParams

N, R, P = 2**15, 8, 1  # ~32 MiB and some tens of ms per try
MAX_MEMORY = 128 * 1024 * 1024
MIN_LENGTH = 8
MAX_LENGTH = 1024


def check_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise InvalidParams(f"A password must have {MIN_LENGTH} to {MAX_LENGTH} characters.")
    return password


def new_password() -> str:
    return secrets.token_urlsafe(18)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, N, R, P)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
