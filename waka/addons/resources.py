"""What the API asks of add-on resources outside the ledger: facts for `pg:info` and
`redis:info`, and ending a database's sessions (`pg:killall`). A service the composition root
wires with the providers, so HTTP handlers never reach a provider themselves."""

from __future__ import annotations

import logging

from waka.addons.catalogue import Plan
from waka.addons.provider import Provider

log = logging.getLogger("waka.addons")


class AddonResources:
    def __init__(self, providers: dict[str, Provider]) -> None:
        self.providers = providers

    def facts(self, service: str, addon_id: str, plan: Plan) -> list[tuple[str, str]]:
        """The provider's facts; an unreachable server is a fact too, not a failure."""
        try:
            return self.providers[service].info(addon_id, plan)
        except Exception as error:
            log.warning("facts of add-on %s: %s", addon_id, error)
            return [("Status", f"Unavailable ({error})")]

    def end_sessions(self, service: str, addon_id: str) -> int:
        """Every session on the add-on's database ends now; how many there were."""
        return self.providers[service].kill_connections(addon_id)  # type: ignore[attr-defined]
