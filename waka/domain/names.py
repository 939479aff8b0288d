"""AppName: an index aggregate, one per name, that makes app names unique.

Its id is derived from the name, so two creators of one name collide on the same stream and
optimistic concurrency lets only one win. A destroyed or renamed app frees its name again.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from waka.domain.actors import Actor
from waka.domain.errors import NameTaken

NAMESPACE = uuid5(NAMESPACE_URL, "https://waka.invalid/app-names")


class AppName(Aggregate):
    @staticmethod
    def create_id(name: str, app_id: UUID) -> UUID:  # type: ignore[override]
        return AppName.id_for(name)

    @staticmethod
    def id_for(name: str) -> UUID:
        return uuid5(NAMESPACE, name)

    @event("Claimed")
    def __init__(self, name: str, app_id: UUID, actor: Actor) -> None:
        self.name = name
        self.app_id: UUID | None = app_id

    def claim(self, app_id: UUID, actor: Actor) -> None:
        if self.app_id is not None and self.app_id != app_id:
            raise NameTaken(f"Name {self.name} is already taken")
        self._claim(app_id=app_id, actor=actor)

    @event("Reclaimed")
    def _claim(self, app_id: UUID, actor: Actor) -> None:
        self.app_id = app_id

    @event("Freed")
    def free(self, actor: Actor) -> None:
        self.freed_from = self.app_id  # who held it last: a destroy sent again names it so
        self.app_id = None


DOMAIN_NAMESPACE = uuid5(NAMESPACE_URL, "https://waka.invalid/domains")


class DomainName(AppName):
    """The same index for custom domains: one hostname belongs to at most one app."""

    @staticmethod
    def create_id(name: str, app_id: UUID, actor: Actor) -> UUID:  # type: ignore[override]
        return DomainName.id_for(name)

    @staticmethod
    def id_for(name: str) -> UUID:
        return uuid5(DOMAIN_NAMESPACE, name)

    def claim(self, app_id: UUID, actor: Actor) -> None:
        if self.app_id is not None and self.app_id != app_id:
            raise NameTaken(f"{self.name} is already in use by another app.")
        self._claim(app_id=app_id, actor=actor)


ADDON_NAMESPACE = uuid5(NAMESPACE_URL, "https://waka.invalid/addon-names")


class AddonName(AppName):
    """Add-on names are unique across the platform too (`heroku addons:info NAME` needs no app).
    `app_id` here holds the add-on's id."""

    @staticmethod
    def create_id(name: str, app_id: UUID, actor: Actor) -> UUID:  # type: ignore[override]
        return AddonName.id_for(name)

    @staticmethod
    def id_for(name: str) -> UUID:
        return uuid5(ADDON_NAMESPACE, name)

    def claim(self, app_id: UUID, actor: Actor) -> None:
        if self.app_id is not None and self.app_id != app_id:
            raise NameTaken(f"Name {self.name} is already taken by another add-on.")
        self._claim(app_id=app_id, actor=actor)
