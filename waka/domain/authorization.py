"""The Authorization aggregate: an OAuth token of a user's, as Heroku's `/oauth/authorizations`.

Made by signing in with a password (`heroku login -i`, a session) or by a signed-in user
(`heroku authorizations:create`, for CI), with a description, a scope and an optional expiry.
The token itself is shown once; the ledger keeps its hash and a hint (its ends, as Heroku
shows tokens) by which the CLI recognises its own token on `heroku logout`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from eventsourcing.domain import Aggregate, event

from waka.domain.actors import Actor
from waka.domain.errors import InvalidParams

SCOPES = ("global", "identity", "read", "write", "read-protected", "write-protected")
MAX_EXPIRES_IN = 10 * 365 * 24 * 3600
MAX_DESCRIPTION = 255
SIGN_IN = "password"  # how a session's authorization was made
GRANTED = "token"  # made by an authenticated user


class Authorization(Aggregate):
    @event("Created")
    def __init__(
        self,
        user_id: str,
        description: str,
        scope: list[str],
        expires_in: int | None,
        expires_at: str | None,
        token_hash: str,
        token_hint: str,
        via: str,
        actor: Actor,
    ) -> None:
        self.user_id = user_id
        self.description = description
        self.scope = scope
        self.expires_in = expires_in
        self.token_hash = token_hash
        self.token_hint = token_hint
        self.via = via
        self.expires_at = expires_at  # ISO 8601 (UTC), or None: it does not expire
        self.revoked = False

    @event("Updated")
    def update(self, description: str, actor: Actor) -> None:
        self.description = description

    @event("Revoked")
    def revoke(self, actor: Actor) -> None:
        self.revoked = True

    @event("Rotated")
    def rotate(
        self, token_hash: str, token_hint: str, expires_at: str | None, actor: Actor
    ) -> None:
        """A new token; the old one stops working. Its lifetime starts again."""
        self.token_hash = token_hash
        self.token_hint = token_hint
        self.expires_at = expires_at


def expiry(expires_in: int | None, start: datetime | None = None) -> str | None:
    """When a token made now with this lifetime expires, as stored (ISO 8601, UTC)."""
    if not expires_in:
        return None
    moment = (start or now()) + timedelta(seconds=expires_in)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def token_hint(token: str) -> str:
    """The token's ends with ten asterisks between: what the CLI matches its own token by."""
    return f"{token[:9]}{'*' * 10}{token[-4:]}"


def check_description(value: object, default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise InvalidParams(
            f"description must be a string of at most {MAX_DESCRIPTION} characters."
        )
    return value


def check_scope(value: object) -> list[str]:
    if value is None:
        return ["global"]
    if isinstance(value, str):
        value = [s.strip() for s in value.split(",")]
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise InvalidParams('scope must be a list of scopes, as in ["global"].')
    unknown = [s for s in value if s not in SCOPES]
    if unknown:
        raise InvalidParams(
            f"Unknown scope {', '.join(unknown)}: the scopes are {', '.join(SCOPES)}."
        )
    return sorted(set(value), key=SCOPES.index)


def check_expires_in(value: object) -> int | None:
    """Seconds (the CLI sends its flag as a string); None or 0: the token does not expire."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidParams("expires_in must be a number of seconds.")
    if value > MAX_EXPIRES_IN:
        raise InvalidParams(f"expires_in must be at most {MAX_EXPIRES_IN} seconds (ten years).")
    return value or None


def scope_allows(scope: list[str] | None, method: str, path: str) -> bool:
    """May a token of this scope make this request? None is the API key's: everything."""
    if scope is None or {"global", "write", "write-protected"} & set(scope):
        return True
    reading = method in ("GET", "HEAD") or path.endswith("/git-upload-pack")  # a git fetch
    if {"read", "read-protected"} & set(scope):
        return reading
    return "identity" in scope and method in ("GET", "HEAD") and path == "/account"


def now() -> datetime:
    return datetime.now(UTC)
