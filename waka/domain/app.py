"""The App aggregate. Its event stream is the app's release ledger.

Every event carries the actor ({"id", "email"}) who caused it; eventsourcing stamps the time.
Deploys, config changes and rollbacks append a `Released` event after their cause; formation,
maintenance and renames do not make releases (Heroku semantics).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from waka.domain import access as policy
from waka.domain import rules
from waka.domain.actors import Actor, made_by_request, request_of, sent_again
from waka.domain.errors import Conflict, InvalidParams, NotFound


def release_id(app_id: UUID, version: int) -> UUID:
    """Release ids are derived, so the ledger need not store them."""
    return uuid5(app_id, f"release:{version}")


def formation_id(app_id: UUID, process_type: str) -> UUID:
    return uuid5(app_id, f"formation:{process_type}")


def describe_config_change(changes: dict[str, str | None]) -> str:
    """Heroku's release description for a config change."""
    set_keys = [k for k, v in changes.items() if v is not None]
    removed = [k for k, v in changes.items() if v is None]
    parts = []
    if set_keys:
        parts.append(f"Set {', '.join(set_keys)} config vars")
    if removed:
        verb = "remove" if parts else "Remove"
        parts.append(f"{verb} {', '.join(removed)} config vars")
    return " and ".join(parts)


def _deploy_description(slug: dict[str, Any]) -> str:
    commit = str(slug.get("commit") or "")
    return f"Deploy {commit[:8]}" if commit else "Deploy"


class App(Aggregate):
    @event("Created")
    def __init__(self, name: str, owner: Actor, region: str, stack: str, actor: Actor) -> None:
        self.name = name
        self.owner = owner
        self.region = region
        self.stack = stack
        self.maintenance = False
        self.destroyed = False
        self.config: dict[str, str] = {}
        self.slug_id: str | None = None
        self.process_types: dict[str, str] = {}
        self.formation: dict[str, dict[str, Any]] = {}
        self.buildpacks: list[str] = []
        self.pending_builds: list[str] = []
        self.drains: list[dict[str, str]] = []
        self.restarts: dict[str, int] = {}
        self.domains: list[str] = []
        # Add-on attachments on this app: id -> {"addon_id", "addon_name", "name", "vars"}.
        # Their config vars belong to the add-on: set and unset only by attach and detach.
        self.attachments: dict[str, dict[str, Any]] = {}
        self.addons: list[str] = []  # ids of the add-ons billed to this app
        # Aggregate version of each Released event (index = release version - 1); rollback
        # replays the ledger to it. A list, not a dict: snapshots go through JSON.
        self.release_positions: list[int] = []
        self.failed_releases: list[int] = []
        self.current_release = 0
        # Releases whose release phase runs: {"version", "slug_id", "process_types",
        # "description", "build_id"}; each takes its version when requested.
        self.pending_releases: list[dict[str, Any]] = []

    @staticmethod
    def create_id(actor: Actor) -> UUID:
        return made_by_request("app", actor)

    @classmethod
    def create(
        cls, name: str, owner: Actor, region: str, stack: str, actor: Actor | None = None
    ) -> App:
        """`actor`: who creates it, when not its owner (a team's app)."""
        actor = actor or owner
        app = cls(name=name, owner=owner, region=region, stack=stack, actor=actor)
        app._release(version=1, description="Initial release", slug_id=None, actor=actor)
        return app

    # --- releases -------------------------------------------------------------------------

    @property
    def latest_release(self) -> int:
        return len(self.release_positions)

    @event("Released")
    def _release(self, version: int, description: str, slug_id: str | None, actor: Actor) -> None:
        # Applied before the aggregate's version is bumped: this event is version + 1.
        self._place_release(version)
        self.current_release = version

    def _place_release(self, version: int) -> None:
        """Remember where release `version` was decided: a new version is appended; a pending
        one (its version taken when it was requested) is decided now, so a rollback to it
        replays the ledger up to here."""
        if version <= len(self.release_positions):
            self.release_positions[version - 1] = self.version + 1
            self.pending_releases = [p for p in self._pending() if p["version"] != version]
        else:
            self.release_positions.append(self.version + 1)

    def _pending(self) -> list[dict[str, Any]]:
        # Snapshots taken before pending releases existed have no such attribute.
        return self.__dict__.setdefault("pending_releases", [])

    def pending_release(self, version: int) -> dict[str, Any] | None:
        return next((p for p in self._pending() if p["version"] == version), None)

    def pending_release_of_build(self, build_id: str) -> dict[str, Any] | None:
        return next((p for p in self._pending() if p["build_id"] == build_id), None)

    def _next_release(self, description: str, slug_id: str | None, actor: Actor) -> int:
        version = self.latest_release + 1
        self._release(version=version, description=description, slug_id=slug_id, actor=actor)
        return version

    @event("ReleaseFailed")
    def _fail_release(
        self, version: int, description: str, slug_id: str, reason: str, actor: Actor
    ) -> None:
        """A release whose release phase failed: it takes a version but never goes live."""
        self._place_release(version)
        self.failed_releases.append(version)

    def release_slug(
        self, slug: dict[str, Any], description: str, output_id: str, actor: Actor
    ) -> int:
        """Release a slug this app built (`POST /apps/:app/releases`, `releases:retry`) with the
        config vars of now. With a `release` process type the release is pending until its
        release phase passes (`finish_release`); without, it goes live at once."""
        self._check_live()
        if "release" in slug["process_types"]:
            return self._request_release_phase(slug, description, None, output_id, actor)
        return self._go_live(slug, description, actor)

    def request_release_phase(
        self, build_id: str, slug: dict[str, Any], output_id: str, actor: Actor
    ) -> dict[str, Any]:
        """A build's slug is about to run its release phase: its release takes its version now
        (pending), so the release and its output can be followed while the phase runs.
        Asked again for the same build (a build run again after a crash), the same one."""
        self._check_live()
        existing = self.pending_release_of_build(build_id)
        if existing is None:
            self._request_release_phase(slug, _deploy_description(slug), build_id, output_id, actor)
            existing = self.pending_release_of_build(build_id)
        assert existing is not None
        return existing

    def _request_release_phase(
        self,
        slug: dict[str, Any],
        description: str,
        build_id: str | None,
        output_id: str,
        actor: Actor,
    ) -> int:
        version = self.latest_release + 1
        self._request_release(
            version=version,
            description=description,
            slug_id=slug["id"],
            process_types=dict(slug["process_types"]),
            build_id=build_id,
            output_id=output_id,
            actor=actor,
        )
        return version

    @event("ReleaseRequested")
    def _request_release(
        self,
        version: int,
        description: str,
        slug_id: str,
        process_types: dict[str, str],
        build_id: str | None,
        output_id: str,
        actor: Actor,
    ) -> None:
        """A release waiting for its release phase: its version is taken (status pending)."""
        self.release_positions.append(self.version + 1)
        self._pending().append(
            {
                "version": version,
                "description": description,
                "slug_id": slug_id,
                "process_types": process_types,
                "build_id": build_id,
                "output_id": output_id,
            }
        )

    def finish_release(self, version: int, failure: str | None, actor: Actor) -> bool:
        """The release phase of a pending slug release ended: the release goes live, or fails
        (the current release stays). False (and nothing recorded) if it is not pending."""
        pending = self.pending_release(version)
        if pending is None or pending["build_id"] is not None or self.destroyed:
            return False  # a build's pending release is finished by finish_build
        if failure is not None:
            self._fail_release(
                version=version,
                description=pending["description"],
                slug_id=pending["slug_id"],
                reason=failure,
                actor=actor,
            )
            return True
        slug = {"id": pending["slug_id"], "process_types": pending["process_types"]}
        self._go_live(slug, pending["description"], actor, version)
        return True

    def _go_live(
        self, slug: dict[str, Any], description: str, actor: Actor, version: int | None = None
    ) -> int:
        process_types = dict(slug["process_types"])
        self._release_slug(slug_id=slug["id"], process_types=process_types, actor=actor)
        version = version or self.latest_release + 1
        self._release(version=version, description=description, slug_id=slug["id"], actor=actor)
        self._join_formation(slug["process_types"], actor)
        return version

    @event("SlugReleased")
    def _release_slug(self, slug_id: str, process_types: dict[str, str], actor: Actor) -> None:
        """A slug made earlier goes live (the cause of its `Released`, as `RolledBack` is)."""
        self.slug_id = slug_id
        self.process_types = process_types

    def _join_formation(self, process_types: dict[str, str], actor: Actor) -> None:
        """A process type seen for the first time joins the formation; web starts with one
        dyno, as on Heroku."""
        new_types = [t for t in process_types if t not in self.formation]
        if new_types:
            self._change_formation(
                updates=[{"type": t, "quantity": 1 if t == "web" else 0} for t in new_types],
                actor=actor,
            )

    def is_failed_release(self, version: int) -> bool:
        return version in self.failed_releases

    def set_config(self, changes: dict[str, str | None], actor: Actor) -> int:
        """Apply a config-vars patch (None unsets) and make a release. Returns its version."""
        self._check_live()
        changes = rules.check_config_changes(changes)
        owned = sorted(set(changes) & self.addon_vars())
        if owned:
            raise InvalidParams(
                f"Cannot overwrite attachment values {', '.join(owned)}: they belong to an "
                "add-on. Detach or destroy the add-on instead."
            )
        if not changes:
            return self.current_release
        if sent_again(getattr(self, "last_config_change", None), actor, changes):
            return self.current_release
        merged = {k: v for k, v in self.config.items() if changes.get(k, v) is not None}
        merged.update({k: v for k, v in changes.items() if v is not None})
        rules.check_config_size(merged)
        self._change_config(changes=changes, actor=actor)
        return self._next_release(describe_config_change(changes), self.slug_id, actor)

    @event("ConfigChanged")
    def _change_config(self, changes: dict[str, str | None], actor: Actor) -> None:
        for key, value in changes.items():
            if value is None:
                self.config.pop(key, None)
            else:
                self.config[key] = value
        self.last_config_change = request_of(actor, dict(changes))

    def aggregate_version_of(self, release_version: int) -> int:
        if not 1 <= release_version <= len(self.release_positions):
            raise NotFound(f"Couldn't find that release (v{release_version}).")
        return self.release_positions[release_version - 1]

    def rollback(self, target: App, target_version: int, actor: Actor) -> int:
        """Make a new release with the slug and config vars of `target`, this app as it stood
        at release `target_version` (a replay of the ledger)."""
        self._check_live()
        if sent_again(getattr(self, "last_rollback", None), actor, target_version):
            return self.current_release
        if self.is_failed_release(target_version):
            raise InvalidParams(
                f"v{target_version} failed in its release phase; it cannot be rolled back to."
            )
        if self.pending_release(target_version) is not None:
            raise InvalidParams(
                f"v{target_version} is still running its release phase; it cannot be rolled "
                "back to."
            )
        if target.id != self.id or target.current_release != target_version:
            raise InvalidParams("Rollback target is not a release of this app.")
        # Add-ons are not rolled back (Heroku semantics): the add-ons attached now keep
        # their config vars, and those of add-ons attached then but gone now stay gone.
        now = self.addon_vars()
        config = {k: v for k, v in target.config.items() if k not in now | target.addon_vars()}
        config.update({k: v for k, v in self.config.items() if k in now})
        self._roll_back(
            target_version=target_version,
            slug_id=target.slug_id,
            process_types=dict(target.process_types),
            config=config,
            actor=actor,
        )
        return self._next_release(f"Rollback to v{target_version}", target.slug_id, actor)

    @event("RolledBack")
    def _roll_back(
        self,
        target_version: int,
        slug_id: str | None,
        process_types: dict[str, str],
        config: dict[str, str],
        actor: Actor,
    ) -> None:
        self.slug_id = slug_id
        self.process_types = process_types
        self.config = config
        self.last_rollback = request_of(actor, target_version)

    # --- add-ons --------------------------------------------------------------------------

    def addon_vars(self) -> set[str]:
        return {v for a in self.attachments.values() for v in a["vars"]}

    def attachment_names(self) -> set[str]:
        return {a["name"] for a in self.attachments.values()}

    def own_addon(self, addon_id: str, actor: Actor) -> None:
        """An add-on billed to this app was asked for (it attaches once provisioned)."""
        self._check_live()
        self._own_addon(addon_id=addon_id, actor=actor)

    @event("AddonCreated")
    def _own_addon(self, addon_id: str, actor: Actor) -> None:
        self.addons.append(addon_id)

    def attach_addon(
        self,
        addon_id: str,
        addon_name: str,
        attachments: list[dict[str, str]],
        config: dict[str, str],
        actor: Actor,
    ) -> int:
        """Attach an add-on under one or more names ({"id", "name", "plan"}); each name prefixes the
        add-on's config (DATABASE + URL -> DATABASE_URL). Makes a release; returns it."""
        self._check_live()
        taken = self.attachment_names()
        for attachment in attachments:
            if attachment["name"] in taken:
                raise Conflict(
                    f"{self.name} already has an add-on attached as {attachment['name']}."
                )
        named = [
            {**a, "vars": [f"{a['name']}_{key}" for key in sorted(config)]} for a in attachments
        ]
        values = {f"{a['name']}_{k}": v for a in attachments for k, v in config.items()}
        rules.check_config_size({**self.config, **values})
        self._attach_addon(
            addon_id=addon_id, addon_name=addon_name, attachments=named, config=values, actor=actor
        )
        names = ", ".join(a["name"] for a in attachments)
        return self._next_release(f"Attach {names} (@ref:{addon_name})", self.slug_id, actor)

    @event("AddonAttached")
    def _attach_addon(
        self,
        addon_id: str,
        addon_name: str,
        attachments: list[dict[str, Any]],
        config: dict[str, str],
        actor: Actor,
    ) -> None:
        for attachment in attachments:
            self.attachments[attachment["id"]] = {
                "addon_id": addon_id,
                "addon_name": addon_name,
                "name": attachment["name"],
                "vars": list(attachment["vars"]),
                "plan": attachment.get("plan", ""),
            }
        self.config.update(config)

    def detach_addon(self, attachment_ids: list[str], addon_name: str, actor: Actor) -> int:
        """Remove attachments and their config vars. Makes a release; returns it."""
        self._check_live()
        missing = [a for a in attachment_ids if a not in self.attachments]
        if missing or not attachment_ids:
            raise NotFound("Couldn't find that add-on attachment.")
        gone = [self.attachments[a] for a in attachment_ids]
        self._detach_addon(
            addon_id=gone[0]["addon_id"],
            attachment_ids=attachment_ids,
            keys=sorted({v for a in gone for v in a["vars"]}),
            actor=actor,
        )
        names = ", ".join(a["name"] for a in gone)
        return self._next_release(f"Detach {names} (@ref:{addon_name})", self.slug_id, actor)

    @event("AddonDetached")
    def _detach_addon(
        self, addon_id: str, attachment_ids: list[str], keys: list[str], actor: Actor
    ) -> None:
        for attachment in attachment_ids:
            self.attachments.pop(attachment, None)
        for key in keys:
            self.config.pop(key, None)

    def forget_addon(self, addon_id: str, actor: Actor) -> None:
        """An add-on billed to this app was destroyed."""
        if addon_id in self.addons:
            self._forget_addon(addon_id=addon_id, actor=actor)

    @event("AddonRemoved")
    def _forget_addon(self, addon_id: str, actor: Actor) -> None:
        self.addons.remove(addon_id)

    # --- builds ---------------------------------------------------------------------------

    def request_build(
        self, build_id: str, source_url: str, source_version: str, actor: Actor
    ) -> None:
        self._check_live()
        self._request_build(
            build_id=build_id,
            source_url=source_url,
            source_version=source_version,
            buildpacks=list(self.buildpacks),
            actor=actor,
        )

    @event("BuildRequested")
    def _request_build(
        self,
        build_id: str,
        source_url: str,
        source_version: str,
        buildpacks: list[str],
        actor: Actor,
    ) -> None:
        self.pending_builds.append(build_id)

    def fail_build(self, build_id: str, reason: str, actor: Actor) -> bool:
        """Record a failed build; False (and nothing recorded) if it already finished."""
        if build_id not in self.pending_builds:
            return False
        self._fail_build(build_id=build_id, reason=reason, actor=actor)
        pending = self.pending_release_of_build(build_id)
        if pending is not None:  # the build broke during its release phase: so did its release
            self._fail_release(
                version=pending["version"],
                description=pending["description"],
                slug_id=pending["slug_id"],
                reason=reason,
                actor=actor,
            )
        return True

    @event("BuildFailed")
    def _fail_build(self, build_id: str, reason: str, actor: Actor) -> None:
        self.pending_builds.remove(build_id)

    def finish_build(
        self, build_id: str, slug: dict[str, Any], release_failure: str | None, actor: Actor
    ) -> int | None:
        """Record a built slug and release it (or record its failed release phase).
        Returns the release version; None if the build had already finished (a replay)."""
        if build_id not in self.pending_builds:
            return None
        self._check_live()
        self._succeed_build(
            build_id=build_id, slug=slug, released=release_failure is None, actor=actor
        )
        pending = self.pending_release_of_build(build_id)  # its release phase ran
        version = pending["version"] if pending else self.latest_release + 1
        description = _deploy_description(slug)
        if release_failure is not None:
            self._fail_release(
                version=version,
                description=description,
                slug_id=slug["id"],
                reason=release_failure,
                actor=actor,
            )
            return version
        self._release(version=version, description=description, slug_id=slug["id"], actor=actor)
        self._join_formation(slug["process_types"], actor)
        return version

    @event("BuildSucceeded")
    def _succeed_build(
        self, build_id: str, slug: dict[str, Any], released: bool, actor: Actor
    ) -> None:
        self.pending_builds.remove(build_id)
        if released:  # a slug whose release phase failed never goes live
            self.slug_id = slug["id"]
            self.process_types = dict(slug["process_types"])

    def set_buildpacks(self, buildpacks: list[str], actor: Actor) -> None:
        self._check_live()
        if not isinstance(buildpacks, list) or not all(
            isinstance(b, str) and b.strip() for b in buildpacks
        ):
            raise InvalidParams("Buildpacks must be a list of names or URLs.")
        self._set_buildpacks(buildpacks=[b.strip() for b in buildpacks], actor=actor)

    @event("BuildpacksChanged")
    def _set_buildpacks(self, buildpacks: list[str], actor: Actor) -> None:
        self.buildpacks = buildpacks

    @event("BuildCacheCleared")
    def clear_build_cache(self, actor: Actor) -> None:
        # Counted, so whichever worker builds next can tell its cache is from before a purge.
        self.build_cache_generation = self.cache_generation + 1

    @property
    def cache_generation(self) -> int:
        return getattr(self, "build_cache_generation", 0)  # older snapshots have none

    # --- dynos ----------------------------------------------------------------------------

    def restart(self, target: str, actor: Actor) -> None:
        """Restart all dynos (target ""), a process type ("web") or one dyno ("web.1")."""
        self._check_live()
        if target:
            process_type = target.split(".", 1)[0]
            rules.check_process_type(process_type)
            if process_type not in self.formation and process_type not in self.process_types:
                raise NotFound(f"Couldn't find that dyno or process type ({target}).")
        self._restart(target=target, actor=actor)

    @event("DynosRestarted")
    def _restart(self, target: str, actor: Actor) -> None:
        self.restarts[target] = self.restarts.get(target, 0) + 1

    def generation_of(self, dyno: str) -> int:
        """Bumped by every restart that covers this dyno; a dyno of an older one is replaced."""
        process_type = dyno.split(".", 1)[0]
        return sum(self.restarts.get(key, 0) for key in ("", process_type, dyno))

    # --- one-off dynos --------------------------------------------------------------------

    def one_off_started_by(self, actor: Actor, command: str) -> str | None:
        """The detached one-off dyno this request started, when it is sent again; else None."""
        last = getattr(self, "last_one_off", None)
        if last is None or not sent_again(last[0], actor, command):
            return None
        return str(last[1])

    def record_one_off(self, name: str, command: str, actor: Actor) -> None:
        """A detached one-off dyno started (`heroku run:detached`): in the audit log, and
        known when its request comes again. (Attached ones end with their user's session.)"""
        self._check_live()
        self._start_one_off(name=name, command=command, actor=actor)

    @event("OneOffStarted")
    def _start_one_off(self, name: str, command: str, actor: Actor) -> None:
        self.last_one_off = [request_of(actor, command), name]

    # --- custom domains -------------------------------------------------------------------

    def add_domain(self, hostname: str, actor: Actor) -> tuple[str, bool]:
        """-> (the hostname as kept, whether it was added now: not when this is the request
        that added it, sent again)."""
        self._check_live()
        hostname = rules.check_hostname(hostname)
        if hostname in self.domains:
            if sent_again(getattr(self, "last_domain_added", None), actor, hostname):
                return hostname, False
            raise Conflict(f"{hostname} is already added to {self.name}.")
        self._add_domain(hostname=hostname, actor=actor)
        return hostname, True

    @event("DomainAdded")
    def _add_domain(self, hostname: str, actor: Actor) -> None:
        self.domains.append(hostname)
        self.last_domain_added = request_of(actor, hostname)

    def remove_domain(self, hostname: str, actor: Actor) -> tuple[str, bool]:
        """-> (the hostname, whether it was removed now: not when this is the request that
        removed it, sent again, whatever it named the domain by)."""
        self._check_live()
        hostname = hostname.lower().rstrip(".")
        if hostname not in self.domains:
            last = getattr(self, "last_domain_removed", None)
            if last is not None and sent_again(last[0], actor, "domain"):
                return last[1], False
            raise NotFound(f"Couldn't find that domain ({hostname}).")
        self._remove_domain(hostname=hostname, actor=actor)
        return hostname, True

    @event("DomainRemoved")
    def _remove_domain(self, hostname: str, actor: Actor) -> None:
        self.domains.remove(hostname)
        self.last_domain_removed = [request_of(actor, "domain"), hostname]

    # --- log drains -----------------------------------------------------------------------

    def add_drain(self, drain_id: str, url: str, token: str, actor: Actor) -> dict[str, str]:
        """-> the drain added; the one it added when this request is sent again."""
        self._check_live()
        rules.check_drain_url(url)
        for drain in self.drains:
            if drain["url"] == url:
                if sent_again(getattr(self, "last_drain_added", None), actor, url):
                    return drain
                raise Conflict(f"Drain {url} is already added to {self.name}.")
        self._add_drain(drain_id=drain_id, url=url, token=token, actor=actor)
        return self.drains[-1]

    @event("DrainAdded")
    def _add_drain(self, drain_id: str, url: str, token: str, actor: Actor) -> None:
        self.drains.append({"id": drain_id, "url": url, "token": token})
        self.last_drain_added = request_of(actor, url)

    def remove_drain(self, id_or_url: str, actor: Actor) -> dict[str, str]:
        """-> the drain removed; the one it removed when this request is sent again."""
        self._check_live()
        for drain in self.drains:
            if id_or_url in (drain["id"], drain["url"], drain["token"]):
                self._remove_drain(drain_id=drain["id"], actor=actor)
                return drain
        last = getattr(self, "last_drain_removed", None)
        if last is not None and sent_again(last[0], actor, "drain"):
            return dict(last[1])
        raise NotFound("Couldn't find that log drain.")

    @event("DrainRemoved")
    def _remove_drain(self, drain_id: str, actor: Actor) -> None:
        removed = next(d for d in self.drains if d["id"] == drain_id)
        self.drains = [d for d in self.drains if d["id"] != drain_id]
        self.last_drain_removed = [request_of(actor, "drain"), removed]

    # --- formation ------------------------------------------------------------------------

    def scale(self, updates: list[dict[str, Any]], actor: Actor) -> list[str]:
        """Change quantity and/or size of process types. Makes no release. Returns the types."""
        self._check_live()
        if not isinstance(updates, list) or not updates:
            raise InvalidParams("Formation updates must be a non-empty list.")
        checked: list[dict[str, Any]] = []
        for update in updates:
            if not isinstance(update, dict):
                raise InvalidParams("Each formation update must be an object.")
            process_type = rules.check_process_type(update.get("type"))
            # Only types the current release's slug declares, as on Heroku: an app never
            # deployed has none.
            if process_type not in self.process_types:
                raise NotFound(f"Couldn't find that process type ({process_type}).")
            item: dict[str, Any] = {"type": process_type}
            if update.get("quantity") is not None:
                current = self.formation.get(process_type, {}).get("quantity", 0)
                item["quantity"] = rules.check_quantity(update["quantity"], current)
            if update.get("size") is not None:
                item["size"] = rules.check_size(update["size"])
            if len(item) == 1:
                raise InvalidParams(f"Give a quantity or a size for process type {process_type}.")
            checked.append(item)
        self._change_formation(updates=checked, actor=actor)
        return [u["type"] for u in checked]

    @event("FormationChanged")
    def _change_formation(self, updates: list[dict[str, Any]], actor: Actor) -> None:
        for update in updates:
            current = self.formation.setdefault(
                update["type"], {"quantity": 0, "size": rules.DEFAULT_SIZE}
            )
            current.update({k: v for k, v in update.items() if k != "type"})

    # --- features (heroku features / labs) -------------------------------------------------

    def enabled_features(self) -> list[str]:
        # Snapshots taken before features existed have no such attribute.
        return self.__dict__.setdefault("features", [])

    def set_feature(self, name: str, enabled: bool, actor: Actor) -> bool:
        """Switch an app feature of the catalogue (waka/domain/features.py) on or off; no
        release, no restart (as on Heroku: it applies to the next dynos). False if unchanged."""
        self._check_live()
        if not isinstance(enabled, bool):
            raise InvalidParams("enabled must be true or false.")
        if (name in self.enabled_features()) == enabled:
            return False
        self._set_feature(name=name, enabled=enabled, actor=actor)
        return True

    @event("FeatureChanged")
    def _set_feature(self, name: str, enabled: bool, actor: Actor) -> None:
        features = self.enabled_features()
        if enabled:
            features.append(name)
        else:
            features.remove(name)

    # --- app settings ---------------------------------------------------------------------

    def rename(self, new_name: str, actor: Actor) -> None:
        self._check_live()
        rules.check_app_name(new_name)
        if new_name != self.name:
            self._rename(old_name=self.name, new_name=new_name, actor=actor)

    @event("Renamed")
    def _rename(self, old_name: str, new_name: str, actor: Actor) -> None:
        self.name = new_name

    def set_maintenance(self, enabled: bool, actor: Actor) -> None:
        self._check_live()
        if not isinstance(enabled, bool):
            raise InvalidParams("Maintenance must be true or false.")
        if enabled != self.maintenance:
            self._set_maintenance(enabled=enabled, actor=actor)

    @event("MaintenanceChanged")
    def _set_maintenance(self, enabled: bool, actor: Actor) -> None:
        self.maintenance = enabled

    def destroy(self, actor: Actor) -> None:
        self._check_live()
        self._destroy(name=self.name, actor=actor)

    @event("Destroyed")
    def _destroy(self, name: str, actor: Actor) -> None:
        self.destroyed = True
        self.destroyed_by = request_of(actor, "destroy")

    def destroyed_by_request(self, actor: Actor) -> bool:
        """Whether this actor's request destroyed the app, and this is it sent again."""
        return self.destroyed and sent_again(getattr(self, "destroyed_by", None), actor, "destroy")

    # --- access (the decision is waka/domain/access.py's) ----------------------------------

    @property
    def collaborators(self) -> dict[str, dict[str, Any]]:
        """user id -> {"email", "permissions"}; apps made before collaborators have none."""
        return self.__dict__.setdefault("_collaborators", {})

    @property
    def team(self) -> dict[str, str] | None:
        """{"id", "name"} of the team that owns the app; None for a personal app."""
        return self.__dict__.get("_team")

    @property
    def locked(self) -> bool:
        return bool(self.__dict__.get("_locked", False))

    def access(self, team_roles: dict[str, str] | None = None) -> policy.AppAccess:
        """The app as the access policy sees it; `team_roles`: its team's (the ledger's)."""
        grants = {uid: c["permissions"] for uid, c in self.collaborators.items()}
        return policy.AppAccess(
            name=self.name,
            owner_id=self.owner["id"],
            grants=grants,
            team_roles=team_roles or {},
            locked=self.locked,
        )

    def check_access(
        self,
        actor: Actor,
        permission: str = policy.DEPLOY,
        team_roles: dict[str, str] | None = None,
    ) -> None:
        policy.check(self.access(team_roles), actor["id"], permission)

    def join_team(self, team: dict[str, str], actor: Actor) -> None:
        """Made in a team (`apps:create --team`): the team owns it."""
        self._join_team(team=team, actor=actor)

    @event("TeamJoined")
    def _join_team(self, team: dict[str, str], actor: Actor) -> None:
        self.__dict__["_team"] = team

    # --- transfers (`heroku apps:transfer`) ------------------------------------------------

    @property
    def transfers(self) -> dict[str, dict[str, str]]:
        """Pending personal transfers: id -> the recipient {"id", "email"}."""
        return self.__dict__.setdefault("_transfers", {})

    def request_transfer(self, transfer_id: str, recipient: Actor, actor: Actor) -> None:
        """Offer a personal app to another user; it is theirs once they accept."""
        self._check_live()
        self.check_access(actor, policy.MANAGE)
        if self.team is not None:
            raise InvalidParams(f"{self.name} is a team app: transfer it with its team.")
        if recipient["id"] == self.owner["id"]:
            raise InvalidParams(f"{recipient['email']} already owns {self.name}.")
        self._request_transfer(transfer_id=transfer_id, recipient=recipient, actor=actor)

    @event("TransferRequested")
    def _request_transfer(self, transfer_id: str, recipient: Actor, actor: Actor) -> None:
        self.transfers[transfer_id] = recipient

    def answer_transfer(self, transfer_id: str, state: str, actor: Actor) -> None:
        """The recipient accepts or declines; the owner may cancel (state "cancelled")."""
        self._check_live()
        recipient = self.transfers.get(transfer_id)
        if recipient is None:
            raise NotFound("Couldn't find that app transfer.")
        if state == "cancelled":
            self.check_access(actor, policy.MANAGE)
        elif actor["id"] != recipient["id"]:
            raise NotFound("Couldn't find that app transfer.")  # others cannot see it
        if state == "accepted":
            self._transfer(new_owner=recipient, team=None, transfer_id=transfer_id, actor=actor)
        elif state in ("declined", "cancelled"):
            self._close_transfer(transfer_id=transfer_id, state=state, actor=actor)
        else:
            raise InvalidParams("state must be accepted or declined.")

    @event("TransferClosed")
    def _close_transfer(self, transfer_id: str, state: str, actor: Actor) -> None:
        self.transfers.pop(transfer_id, None)

    def transfer_to_team(
        self, team: dict[str, str], new_owner: Actor, actor: Actor, team_roles: dict[str, str]
    ) -> None:
        """A personal app into a team its owner is an admin or member of (at once)."""
        self._check_live()
        self.check_access(actor, policy.MANAGE)
        if self.team is not None and self.team["id"] == team["id"]:
            raise InvalidParams(f"{self.name} is already in the team {team['name']}.")
        if team_roles.get(actor["id"]) not in ("admin", "member"):
            raise policy.denied_team(team["name"])
        self._transfer(new_owner=new_owner, team=team, transfer_id="", actor=actor)

    @event("Transferred")
    def _transfer(
        self, new_owner: Actor, team: dict[str, str] | None, transfer_id: str, actor: Actor
    ) -> None:
        self.owner = new_owner
        self.__dict__["_team"] = team
        self.__dict__["_locked"] = False
        self.transfers.clear()  # other offers lapse with the change of owner
        self.collaborators.pop(new_owner["id"], None)  # the new owner needs no grant

    def set_locked(self, locked: bool, actor: Actor, team_roles: dict[str, str]) -> bool:
        """`apps:lock` / `apps:unlock`: who manages a team app decides; False if unchanged."""
        self._check_live()
        if self.team is None:
            raise InvalidParams(f"{self.name} is not a team app: only team apps can be locked.")
        self.check_access(actor, policy.MANAGE, team_roles)
        if not isinstance(locked, bool):
            raise InvalidParams("locked must be true or false.")
        if locked == self.locked:
            return False
        self._set_locked(locked=locked, actor=actor)
        return True

    @event("LockChanged")
    def _set_locked(self, locked: bool, actor: Actor) -> None:
        self.__dict__["_locked"] = locked

    def add_collaborator(
        self,
        user: Actor,
        permissions: list[str],
        actor: Actor,
        team_roles: dict[str, str] | None = None,
    ) -> bool:
        """Grant `user` access; False if they already hold exactly these permissions. A team
        member may join an unlocked team app themselves (`apps:join`)."""
        self._check_live()
        joining = user["id"] == actor["id"] and (team_roles or {}).get(user["id"]) == "member"
        if not (joining and not self.locked):
            self.check_access(actor, policy.MANAGE, team_roles)
        if user["id"] == self.owner["id"]:
            raise Conflict(f"{user['email']} owns {self.name}.")
        held = self.collaborators.get(user["id"])
        if held is not None and held["permissions"] == permissions:
            return False
        if held is None:
            self._add_collaborator(user=user, permissions=permissions, actor=actor)
        else:
            self._update_collaborator(user=user, permissions=permissions, actor=actor)
        return True

    @event("CollaboratorAdded")
    def _add_collaborator(self, user: Actor, permissions: list[str], actor: Actor) -> None:
        self.collaborators[user["id"]] = {"email": user["email"], "permissions": permissions}

    @event("CollaboratorUpdated")
    def _update_collaborator(self, user: Actor, permissions: list[str], actor: Actor) -> None:
        self.collaborators[user["id"]] = {"email": user["email"], "permissions": permissions}

    def remove_collaborator(
        self, user_id_or_email: str, actor: Actor, team_roles: dict[str, str] | None = None
    ) -> Actor:
        """Revoke a collaborator's access: the owner may, and a collaborator may leave."""
        self._check_live()
        found = next(
            (
                {"id": uid, "email": c["email"]}
                for uid, c in self.collaborators.items()
                if user_id_or_email in (uid, c["email"])
            ),
            None,
        )
        if found is None or found["id"] != actor["id"]:
            self.check_access(actor, policy.MANAGE, team_roles)
        if found is None:
            raise NotFound(f"{user_id_or_email} is not a collaborator on {self.name}.")
        self._remove_collaborator(user=found, actor=actor)
        return found

    @event("CollaboratorRemoved")
    def _remove_collaborator(self, user: Actor, actor: Actor) -> None:
        self.collaborators.pop(user["id"], None)

    def _check_live(self) -> None:
        if self.destroyed:
            raise NotFound("Couldn't find that app.")
