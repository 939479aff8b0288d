"""The audit log: a query over the ledger itself, never a copy of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.application import Application

from waka.buildpacks.sources import display_url
from waka.domain.account import Account
from waka.domain.acm import AutomatedCertificates
from waka.domain.addon import Addon
from waka.domain.app import App, describe_config_change
from waka.domain.authorization import SIGN_IN, Authorization
from waka.domain.certificate import SniEndpoint, parse_chain
from waka.domain.team import Team
from waka.domain.webhook import AppWebhook
from waka.notification_log import follow
from waka.projections.base import iso
from waka.redaction import redact_url


@dataclass(frozen=True)
class Entry:
    at: datetime
    actor: str
    app: str  # the app's name when it happened; "" for account events
    app_id: str
    action: str
    renamed_to: str = ""
    team: str = ""  # the team's name, for a team's events and its apps' ones

    def line(self) -> str:
        return f"{iso(self.at)}  {self.actor:<28} {self.app or '-':<30} {self.action}"


def describe(event: Any) -> str | None:
    """What an event means to a person; None for bookkeeping events (the name index)."""
    match event:
        case App.Created():
            return f"Create app {event.name}"
        case App.Released():
            return f"Release v{event.version}: {event.description}"
        case App.ConfigChanged():
            return describe_config_change(event.changes)
        case App.RolledBack():
            return f"Roll back to v{event.target_version}"
        case App.FormationChanged():
            parts = []
            for u in event.updates:
                size = f":{u['size']}" if "size" in u else ""
                quantity = u.get("quantity", "")
                parts.append(f"{u['type']}={quantity}{size}")
            return f"Scale {' '.join(parts)}"
        case App.Renamed():
            return f"Rename {event.old_name} to {event.new_name}"
        case App.MaintenanceChanged():
            return f"Maintenance {'on' if event.enabled else 'off'}"
        case App.FeatureChanged():
            return f"{'Enable' if event.enabled else 'Disable'} feature {event.name}"
        case App.ReleaseFailed():
            return f"Release v{event.version} failed: {event.description} ({event.reason})"
        case App.BuildRequested():
            return f"Build {event.source_version[:8] or event.build_id[:8]} requested"
        case App.BuildSucceeded():
            return f"Build succeeded: slug {event.slug['id'][:8]}"
        case App.BuildFailed():
            return f"Build failed: {event.reason}"
        case App.BuildpacksChanged():
            shown = ", ".join(display_url(b) for b in event.buildpacks)  # no credentials
            return f"Set buildpacks: {shown or '(detect)'}"
        case App.BuildCacheCleared():
            return "Clear build cache"
        case App.DynosRestarted():
            return f"Restart {event.target or 'all dynos'}"
        case App.OneOffStarted():
            return f"Run {event.name} (detached)"  # not its command: it may hold a secret
        case App.DomainAdded():
            return f"Add domain {event.hostname}"
        case App.DomainRemoved():
            return f"Remove domain {event.hostname}"
        case App.DrainAdded():
            return f"Add log drain {redact_url(event.url)}"  # its URL may hold a secret
        case App.DrainRemoved():
            return "Remove a log drain"
        case App.Destroyed():
            return f"Destroy app {event.name}"
        case App.CollaboratorAdded():
            return f"Grant {event.user['email']} access ({', '.join(event.permissions)})"
        case App.CollaboratorUpdated():
            return f"Change {event.user['email']}'s access to {', '.join(event.permissions)}"
        case App.CollaboratorRemoved():
            return f"Revoke {event.user['email']}'s access"
        case App.TeamJoined():
            return f"Owned by team {event.team['name']}"
        case App.LockChanged():
            return "Lock app" if event.locked else "Unlock app"
        case App.TransferRequested():
            return f"Offer the app to {event.recipient['email']}"
        case App.TransferClosed():
            return f"Transfer {event.state}"
        case App.Transferred():
            return f"Transfer the app to {event.new_owner['email']}"
        case Team.Created():
            return f"Create team {event.name} (admin {event.admin['email']})"
        case Team.MemberSet():
            return f"Set {event.user['email']}'s role in the team to {event.role}"
        case Team.MemberRemoved():
            return f"Remove {event.user['email']} from the team"
        case Account.Registered():
            return f"Register user {event.email}"
        case Account.ApiKeyRegenerated():
            return "Regenerate API key"
        case Account.PasswordSet():
            return "Set password"
        case Authorization.Created() if event.via == SIGN_IN:
            return f"Sign in with password: {event.description} ({event.token_hint})"
        case Authorization.Created():
            scope = ",".join(event.scope)
            return f"Create authorization {event.description} ({scope}, {event.token_hint})"
        case Authorization.Updated():
            return f"Rename authorization {event.originator_id} to {event.description}"
        case Authorization.Rotated():
            return f"Rotate authorization {event.originator_id} ({event.token_hint})"
        case Authorization.Revoked():
            return f"Revoke authorization {event.originator_id}"
    return None


def describe_certificate(event: Any, owners: dict[str, tuple[str, str]]) -> str | None:
    """Certificates and ACM: the app's id is in their first event only, so `owners` (endpoint
    or ACM id -> (app id, certificate name)) is filled as the ledger is read. Never the key."""
    owner = str(event.originator_id)
    match event:
        case SniEndpoint.Created():
            owners[owner] = (str(event.app_id), event.name)
            kind = "ACM certificate" if event.acm else "SSL certificate"
            domains = ", ".join(parse_chain(event.certificate_chain).cert_domains)
            return f"Add {kind} {event.name} ({domains})"
        case SniEndpoint.Updated():
            return f"Update SSL certificate {owners.get(owner, ('', owner))[1]}"
        case SniEndpoint.DomainAttached():
            return f"Serve {event.hostname} with {owners.get(owner, ('', owner))[1]}"
        case SniEndpoint.Removed():
            return f"Remove SSL certificate {owners.get(owner, ('', owner))[1]}"
        case AutomatedCertificates.Started():
            owners[owner] = (str(event.app_id), "")
            return "Enable Automated Certificate Management"
        case AutomatedCertificates.Enabled():
            return "Enable Automated Certificate Management"
        case AutomatedCertificates.Disabled():
            return "Disable Automated Certificate Management"
        case AutomatedCertificates.Refreshed():
            return "Refresh Automated Certificate Management"
        case AutomatedCertificates.Issued():
            return f"ACM certificate issued for {event.hostname}, until {event.expires_at}"
        case AutomatedCertificates.Failed():
            return f"ACM certificate for {event.hostname} failed: {event.reason}"
    return None


def describe_webhook(event: Any, owners: dict[str, tuple[str, str]]) -> str | None:
    """App webhooks: the app's id is in the first event only (`owners` keeps it). The URL as
    logs may show it (it may hold credentials); never the secret or Authorization header."""
    owner = str(event.originator_id)
    match event:
        case AppWebhook.Created():
            owners[owner] = (str(event.app_id), redact_url(event.url))
            return f"Add webhook {redact_url(event.url)} ({','.join(event.include)}, {event.level})"
        case AppWebhook.Updated():  # what changed, never to what
            app_id, shown = owners.get(owner, ("", owner))
            if "url" in event.changes:
                owners[owner] = (app_id, redact_url(event.changes["url"]))
            return f"Update webhook {shown} ({', '.join(sorted(event.changes))})"
        case AppWebhook.Removed():
            return f"Remove webhook {owners.get(owner, ('', owner))[1]}"
    return None


def describe_addon(event: Any, addons: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """Add-on events as (action, app id): the billing app's, or for an attachment the app it
    attaches to. `addons` (add-on or attachment id -> (app id, add-on name)) fills as the
    ledger is read, since only an add-on's first event names its app. Never its config."""
    addon = str(event.originator_id)
    app_id, name = addons.get(addon, ("", addon))
    match event:
        case Addon.Created():
            addons[addon] = (event.app_id, event.name)
            return f"Create add-on {event.name} ({event.service}:{event.plan})", event.app_id
        case Addon.Provisioned():
            return f"Add-on {name} provisioned", app_id
        case Addon.ProvisionFailed():
            return f"Add-on {name} failed to provision: {event.reason}", app_id
        case Addon.Attached():
            addons[event.attachment_id] = (event.app_id, name)
            return f"Attach {name} as {event.name}", event.app_id
        case Addon.Detached():
            on_app = addons.get(event.attachment_id, (app_id, name))[0]
            return f"Detach {name}", on_app
        case Addon.Renamed():
            addons[addon] = (app_id, event.new_name)
            return f"Rename add-on {event.old_name} to {event.new_name}", app_id
        case Addon.PlanChanged():
            return f"Change {name} plan from {event.old_plan} to {event.new_plan}", app_id
        case Addon.ResetRequested():
            return f"Reset {name}", app_id
        case Addon.ResetDone():
            return f"Reset of {name} done", app_id
        case Addon.DeprovisionRequested():
            return f"Destroy add-on {name}", app_id
        case Addon.Deprovisioned():
            return f"Add-on {name} deprovisioned", app_id
    return None


def entries(ledger: Application) -> Iterator[Entry]:
    names: dict[str, str] = {}  # app id -> its name at this point of the ledger
    owners: dict[str, tuple[str, str]] = {}  # certificate or ACM id -> (app id, name)
    addons: dict[str, tuple[str, str]] = {}  # add-on or attachment id -> (app id, name)
    teams: dict[str, str] = {}  # team id, or a team app's id -> the team's name
    for notice in follow(ledger, 0):
        event = notice.event
        action = (
            describe(event)
            or describe_certificate(event, owners)
            or describe_webhook(event, owners)
        )
        app_id = str(event.originator_id) if isinstance(event, App.Event) else ""
        if action is None and isinstance(event, Addon.Event):
            action, app_id = describe_addon(event, addons) or (None, "")
        if action is None:
            continue
        if not app_id and str(event.originator_id) in owners:
            app_id = owners[str(event.originator_id)][0]
        if isinstance(event, App.Created):
            names[app_id] = event.name
        if isinstance(event, Team.Created):
            teams[str(event.originator_id)] = event.name
        if isinstance(event, App.TeamJoined):
            teams[app_id] = event.team["name"]
        name = names.get(app_id, "")
        renamed_to = ""
        if isinstance(event, App.Renamed):
            names[app_id] = renamed_to = event.new_name
        yield Entry(
            at=event.timestamp,
            actor=event.actor.get("email", ""),
            app=name,
            app_id=app_id,
            action=action,
            renamed_to=renamed_to,
            team=teams.get(app_id or str(event.originator_id), ""),
        )


def query(
    ledger: Application,
    app: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    team: str | None = None,
) -> list[Entry]:
    """Entries in ledger order. `app` matches any name the app has ever had."""
    found = list(entries(ledger))
    if app:
        ids = {e.app_id for e in found if app in (e.app, e.renamed_to)}
        found = [e for e in found if e.app_id in ids]
    if team:  # the team's events, and all of its apps' (their first ones precede the team's)
        apps = {e.app_id for e in found if e.team == team and e.app_id}
        found = [e for e in found if e.team == team or e.app_id in apps]
    if actor:
        found = [e for e in found if e.actor == actor.lower()]
    if since:
        found = [e for e in found if e.at >= since]
    return found
