"""App webhooks: a receiver's subscription to an app's events (`heroku webhooks:add`).

An `AppWebhook` is its own aggregate (one stream per webhook) so adding or changing one never
contends with the app's release ledger. Its secret and custom Authorization header are kept in
the ledger (encrypted at rest like every event) and sealed in the read model; they are never
shown again after the webhook is made.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from waka.domain.actors import Actor, made_by_request
from waka.domain.errors import InvalidParams, NotFound

# The entities waka publishes: what Heroku calls them in `include`.
INCLUDES = ("api:addon", "api:build", "api:domain", "api:formation", "api:release", "dyno")
LEVELS = ("notify", "sync")
MAX_URL = 2048


def new_secret() -> str:
    """Heroku hands out 60 hex characters when the user names no secret."""
    return secrets.token_hex(30)


def check_include(include: object) -> list[str]:
    if not isinstance(include, list) or not include or not all(isinstance(i, str) for i in include):
        raise InvalidParams(f"include must be a list of entities: {', '.join(INCLUDES)}.")
    unknown = [i for i in include if i not in INCLUDES]
    if unknown:
        raise InvalidParams(
            f"Unknown webhook entity {', '.join(unknown)}: choose from {', '.join(INCLUDES)}."
        )
    return list(dict.fromkeys(include))


def check_level(level: object) -> str:
    if level not in LEVELS:
        raise InvalidParams("level must be notify or sync.")
    return str(level)


def check_url(url: object) -> str:
    if not isinstance(url, str) or not url.strip():
        raise InvalidParams("url is required: the receiver's http:// or https:// URL.")
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise InvalidParams("url is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL:
        raise InvalidParams("url must be an http:// or https:// URL with a host.")
    return url


def check_optional_text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 1024 or "\n" in value:
        raise InvalidParams(f"{name} must be a single line of text.")
    return value


class AppWebhook(Aggregate):
    @event("Created")
    def __init__(
        self,
        app_id: UUID,
        url: str,
        include: list[str],
        level: str,
        secret: str,
        authorization: str | None,
        actor: Actor,
    ) -> None:
        self.app_id = app_id
        self.url = url
        self.include = include
        self.level = level
        self.secret = secret
        self.authorization = authorization
        self.removed = False

    @staticmethod
    def create_id(actor: Actor) -> UUID:
        return made_by_request("webhook", actor)

    def check_live(self, app_id: UUID) -> None:
        if self.removed or self.app_id != app_id:
            raise NotFound("Couldn't find that webhook.")

    def update(self, changes: dict[str, Any], actor: Actor) -> None:
        """`changes`: checked values of url, include, level, secret, authorization."""
        changes = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if changes:
            self._update(changes=changes, actor=actor)

    @event("Updated")
    def _update(self, changes: dict[str, Any], actor: Actor) -> None:
        for key, value in changes.items():
            setattr(self, key, value)

    def remove(self, actor: Actor) -> None:
        self._remove(actor=actor)

    @event("Removed")
    def _remove(self, actor: Actor) -> None:
        self.removed = True
