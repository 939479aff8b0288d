"""The interface every add-on provider fills: make a resource, find it again, remove it.

A provider is called by the add-on reactor, never by an HTTP handler, and every call may be
repeated after a crash at any point: `provision` of an add-on that already has its resource
returns that resource's config again, `deprovision` of one already gone does nothing.
Resources are named from the add-on's id, so a repeated call finds what an earlier one made.
"""

from __future__ import annotations

from typing import Protocol

from waka.addons.catalogue import Plan, Service


class ProviderError(Exception):
    """The provider could not do it; the message says why, in words for the add-on's owner.
    `retryable` is False when trying again cannot help (a bad plan, a refused setting)."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Provider(Protocol):
    service: Service

    def provision(self, addon_id: str, plan: Plan) -> dict[str, str]:
        """Make (or find again) the add-on's resource. Returns its config, keyed by the
        suffix of the config var each attachment gets: {"URL": "postgres://..."}."""
        ...

    def deprovision(self, addon_id: str) -> None:
        """Remove the resource and everything it holds; nothing is left on the server."""
        ...

    def ensure_running(self, addon_id: str, plan: Plan, config: dict[str, str]) -> None:
        """Bring a provisioned resource back if it stopped (after a reboot, say)."""
        ...

    def exists(self, addon_id: str) -> bool:
        """Whether the resource is there (tests and the operator's checks use it)."""
        ...

    def info(self, addon_id: str, plan: Plan) -> list[tuple[str, str]]:
        """Facts about the resource for `pg:info` / `redis:info`: ("Status", "Available")..."""
        ...

    def reset(self, addon_id: str) -> None:
        """Empty the resource of all data, keeping its credentials (`pg:reset`)."""
        ...


class Unavailable:
    """The provider of a service this installation cannot offer (no server configured):
    provisioning fails at once with the reason, and there is nothing to remove."""

    def __init__(self, service: Service, reason: str) -> None:
        self.service = service
        self.reason = reason

    def provision(self, addon_id: str, plan: Plan) -> dict[str, str]:
        raise ProviderError(self.reason, retryable=False)

    def deprovision(self, addon_id: str) -> None:
        pass

    def ensure_running(self, addon_id: str, plan: Plan, config: dict[str, str]) -> None:
        pass

    def exists(self, addon_id: str) -> bool:
        return False

    def info(self, addon_id: str, plan: Plan) -> list[tuple[str, str]]:
        return [("Status", f"Unavailable: {self.reason}")]

    def reset(self, addon_id: str) -> None:
        raise ProviderError(self.reason, retryable=False)
