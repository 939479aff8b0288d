"""The Addon aggregate: one add-on's life, from the request to make it to its removal.

An add-on belongs to (is billed to) one app and may be attached to several; each attachment
is also an event in the attached app's ledger (App.AddonAttached), which carries the config
vars and makes the release. The resource itself is made and removed by the add-on reactor
through a provider; this aggregate records what happened: provisioning → provisioned (with
the resource's config) or failed (with the reason); deprovisioning → deprovisioned.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from waka.domain.actors import Actor, made_by_request, request_of, sent_again
from waka.domain.errors import Conflict, InvalidParams, NotFound

PROVISIONING = "provisioning"
PROVISIONED = "provisioned"
FAILED = "failed"
DEPROVISIONING = "deprovisioning"
DEPROVISIONED = "deprovisioned"


def attachment_id(addon_id: UUID, app_id: UUID, name: str) -> UUID:
    """Derived, so a replayed attach names the same attachment."""
    return uuid5(addon_id, f"attachment:{app_id}:{name}")


class Addon(Aggregate):
    @event("Created")
    def __init__(
        self,
        name: str,
        service: str,
        plan: str,
        app_id: str,
        app_name: str,
        attachment_name: str | None,
        actor: Actor,
    ) -> None:
        self.name = name
        self.service = service
        self.plan = plan
        self.app_id = app_id  # the billing app
        self.app_name = app_name
        self.attachment_name = attachment_name  # asked for with --as; None: the default
        self.state = PROVISIONING
        self.message = ""  # why it failed, shown as provision_message
        self.config: dict[str, str] = {}  # the resource's config, by suffix: {"URL": ...}
        # attachment id -> {"app_id", "name"}
        self.attachments: dict[str, dict[str, str]] = {}
        self.resets_requested = 0  # `pg:reset`s asked for; the manager does each once
        self.resets_done = 0

    @staticmethod
    def create_id(actor: Actor) -> UUID:
        return made_by_request("addon", actor)

    # --- provisioning ---------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.state in (PROVISIONING, PROVISIONED, FAILED)

    def provisioned(self, config: dict[str, str], actor: Actor) -> bool:
        """Record the made resource; False if this was already recorded (a replay)."""
        if self.state != PROVISIONING:
            return False
        self._provisioned(config=config, actor=actor)
        return True

    @event("Provisioned")
    def _provisioned(self, config: dict[str, str], actor: Actor) -> None:
        self.state = PROVISIONED
        self.config = dict(config)
        self.message = ""

    def fail(self, reason: str, actor: Actor) -> bool:
        if self.state != PROVISIONING:
            return False
        self._fail(reason=reason, actor=actor)
        return True

    @event("ProvisionFailed")
    def _fail(self, reason: str, actor: Actor) -> None:
        self.state = FAILED
        self.message = reason

    # --- attachments ----------------------------------------------------------------------

    @property
    def plan_name(self) -> str:
        """As the API names plans: heroku-postgresql:essential-0."""
        return f"{self.service}:{self.plan}"

    def check_attachable(self) -> None:
        if self.state != PROVISIONED:
            raise InvalidParams(f"{self.name} is {self.state}; only a provisioned add-on attaches.")

    def attach(self, attachment_id: str, app_id: str, name: str, actor: Actor) -> None:
        self.check_attachable()
        if any(a["app_id"] == app_id and a["name"] == name for a in self.attachments.values()):
            raise Conflict(f"{self.name} is already attached to that app as {name}.")
        self._attach(attachment_id=attachment_id, app_id=app_id, name=name, actor=actor)

    @event("Attached")
    def _attach(self, attachment_id: str, app_id: str, name: str, actor: Actor) -> None:
        self.attachments[attachment_id] = {"app_id": app_id, "name": name}
        self.last_attached = [request_of(actor, app_id), attachment_id]

    def attached_by(self, actor: Actor, app_id: str) -> str | None:
        """The attachment to that app this request made, when it is sent again; else None."""
        last = getattr(self, "last_attached", None)
        if last is None or not sent_again(last[0], actor, app_id):
            return None
        return last[1] if last[1] in self.attachments else None

    def detach(self, attachment_id: str, actor: Actor) -> None:
        if attachment_id not in self.attachments:
            raise NotFound("Couldn't find that add-on attachment.")
        self._detach(attachment_id=attachment_id, actor=actor)

    @event("Detached")
    def _detach(self, attachment_id: str, actor: Actor) -> None:
        self.attachments.pop(attachment_id, None)

    def attachments_on(self, app_id: str) -> list[str]:
        return [k for k, a in self.attachments.items() if a["app_id"] == app_id]

    # --- settings -------------------------------------------------------------------------

    def rename(self, new_name: str, actor: Actor) -> None:
        self._check_live()
        if new_name != self.name:
            self._rename(old_name=self.name, new_name=new_name, actor=actor)

    @event("Renamed")
    def _rename(self, old_name: str, new_name: str, actor: Actor) -> None:
        self.name = new_name

    def change_plan(self, plan: str, actor: Actor) -> bool:
        """Move to another plan of the same service; the add-on manager applies its limits.
        False if it is the plan already."""
        self._check_live()
        if self.state != PROVISIONED:
            raise InvalidParams(
                f"{self.name} is {self.state}; its plan can change once provisioned."
            )
        if plan == self.plan:
            return False
        self._change_plan(old_plan=self.plan, new_plan=plan, actor=actor)
        return True

    @event("PlanChanged")
    def _change_plan(self, old_plan: str, new_plan: str, actor: Actor) -> None:
        self.plan = new_plan

    # --- data reset -----------------------------------------------------------------------

    def request_reset(self, actor: Actor) -> int:
        """Ask for the resource to be emptied (`pg:reset`); returns which reset this is."""
        self._check_live()
        if self.state != PROVISIONED:
            raise InvalidParams(f"{self.name} is {self.state}; only a provisioned add-on resets.")
        self._request_reset(reset=self.resets_requested + 1, actor=actor)
        return self.resets_requested

    @event("ResetRequested")
    def _request_reset(self, reset: int, actor: Actor) -> None:
        self.resets_requested = reset

    def reset_done(self, reset: int, actor: Actor) -> bool:
        if reset <= self.resets_done or reset > self.resets_requested:
            return False
        self._reset_done(reset=reset, actor=actor)
        return True

    @event("ResetDone")
    def _reset_done(self, reset: int, actor: Actor) -> None:
        self.resets_done = reset

    # --- removal --------------------------------------------------------------------------

    def request_deprovision(self, actor: Actor) -> None:
        """Removal starts once every attachment is gone (detached in the same save)."""
        self._check_live()
        if self.attachments:
            raise Conflict(f"{self.name} is still attached; detach it first.")
        self._request_deprovision(actor=actor)

    @event("DeprovisionRequested")
    def _request_deprovision(self, actor: Actor) -> None:
        self.state = DEPROVISIONING
        self.destroyed_by = request_of(actor, "destroy")

    def destroyed_by_request(self, actor: Actor) -> bool:
        """Whether this actor's request destroyed the add-on, and this is it sent again."""
        return not self.live and sent_again(getattr(self, "destroyed_by", None), actor, "destroy")

    def deprovisioned(self, actor: Actor) -> bool:
        if self.state != DEPROVISIONING:
            return False
        self._deprovisioned(actor=actor)
        return True

    @event("Deprovisioned")
    def _deprovisioned(self, actor: Actor) -> None:
        self.state = DEPROVISIONED
        self.config = {}

    def _check_live(self) -> None:
        if not self.live:
            raise NotFound("Couldn't find that add-on.")

    def summary(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name, "service": self.service}


COLORS = (
    "AMBER", "BLACK", "BLUE", "BRONZE", "BROWN", "CHARCOAL", "COBALT", "COPPER", "CRIMSON",
    "CYAN", "GOLD", "GRAY", "GREEN", "IVORY", "JADE", "LIME", "MAROON", "MAUVE", "NAVY",
    "OLIVE", "ONYX", "ORANGE", "PINK", "PURPLE", "RED", "ROSE", "SILVER", "TEAL", "VIOLET",
    "WHITE", "YELLOW",
)  # fmt: skip


def attachment_names(
    default: str,
    color_prefix: str,
    color_alias: bool,
    taken: set[str],
    seed: UUID,
    requested: str | None = None,
) -> list[str]:
    """The names an add-on attaches under on an app: the one asked for; else the service's
    default (DATABASE) when free, plus or else a colour name (HEROKU_POSTGRESQL_PINK)."""
    if requested:
        if requested in taken:
            raise Conflict(f"The app already has an add-on attached as {requested}.")
        return [requested]
    free = [c for c in COLORS if f"{color_prefix}_{c}" not in taken]
    if not free:
        raise Conflict("The app has an add-on attached under every colour; use --as NAME.")
    color = f"{color_prefix}_{free[seed.int % len(free)]}"
    if default in taken:
        return [color]
    return [default, color] if color_alias else [default]
