"""The Account aggregate: a user of the platform. API keys are kept only as hashes."""

from __future__ import annotations

import hashlib
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from waka.domain import rules
from waka.domain.actors import Actor

NAMESPACE = uuid5(NAMESPACE_URL, "https://waka.invalid/accounts")


def hash_api_key(key: str) -> str:
    # API keys are 256-bit random tokens, so a fast hash is enough (no brute force is feasible)
    # and lets every request look its key up by hash.
    return hashlib.sha256(key.encode()).hexdigest()


class Account(Aggregate):
    @staticmethod
    def create_id(email: str, name: str, key_hash: str, actor: Actor) -> UUID:  # type: ignore[override]
        return Account.id_for(email)

    @staticmethod
    def id_for(email: str) -> UUID:
        """Derived from the email, so one email can register only once."""
        return uuid5(NAMESPACE, rules.check_email(email))

    @event("Registered")
    def __init__(self, email: str, name: str, key_hash: str, actor: Actor) -> None:
        self.email = email
        self.name = name
        self.key_hash = key_hash

    @event("ApiKeyRegenerated")
    def regenerate_key(self, key_hash: str, actor: Actor) -> None:
        self.key_hash = key_hash

    @event("PasswordSet")
    def set_password(self, password_hash: str, actor: Actor) -> None:
        """For signing in (`heroku login -i`); a salted scrypt hash (waka.domain.passwords)."""
        self.password_hash = password_hash

    def as_actor(self) -> Actor:
        return {"id": str(self.id), "email": self.email}
