"""The ledger: an eventsourcing Application holding the App, AppName and Account aggregates.

Commands load aggregates, call domain methods and save; a concurrent writer on the same
stream makes the save fail with a conflict, and the command is retried on fresh state, so
no update is ever lost. Reads go to the projections, not here.
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import RecordConflictError, Recording
from eventsourcing.utils import Environment, EnvType
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from waka import ledger_cipher
from waka.addons.catalogue import Plan, Service, find_service
from waka.domain import access, rules
from waka.domain.account import Account, hash_api_key
from waka.domain.actors import OPERATOR, Actor, person
from waka.domain.addon import PROVISIONING, Addon, attachment_id, attachment_names
from waka.domain.app import App
from waka.domain.authorization import Authorization, token_hint
from waka.domain.authorization import expiry as authorization_expiry
from waka.domain.errors import Conflict, InvalidParams, NameTaken, NotFound
from waka.domain.names import AddonName, AppName, DomainName
from waka.domain.passwords import check_password, hash_password
from waka.domain.team import ADMIN, MEMBER, Team, check_team_name, owner_of
from waka.ledger_repository import CachingRepository

T = TypeVar("T")
log = logging.getLogger("waka.ledger")

SNAPSHOT_INTERVAL = 100
AGGREGATE_CACHE_SIZE = 1000  # aggregates kept in memory between commands, per process

# Concurrent commands on one stream: retry on a version conflict, with jitter so that
# parallel writers spread out. 20 tries at <=0.2 s covers dozens of writers on one app.
_retry = retry(
    retry=retry_if_exception_type(RecordConflictError),
    stop=stop_after_attempt(20),
    wait=wait_random_exponential(multiplier=0.005, max=0.2),
    reraise=True,
)


class _AppLock:
    def __init__(self) -> None:
        self.lock = threading.RLock()  # re-entrant: a command may call another on its app


class _AppCommands:
    """One lock per app with a command running on this Ledger: its commands queue here
    instead of racing each other to the store and retrying (eight writers of one app made
    ~2.4 saves per write, and under load one could run out of tries). Writers in other
    processes still meet through optimistic concurrency. A lock lives while it is held."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, _AppLock] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, app_id: object) -> Iterator[None]:
        with self._guard:
            held = self._locks.get(str(app_id))
            if held is None:
                held = self._locks[str(app_id)] = _AppLock()
        with held.lock:
            yield


def retry_on_conflict(command: Callable[..., T]) -> Callable[..., T]:
    """A command: retried on a version conflict, and, when it names an `app_id`, queued
    behind this process's other commands on that app."""
    retried = _retry(command)
    signature = inspect.signature(command)
    if "app_id" not in signature.parameters:
        return retried

    @functools.wraps(command)
    def queued(*args: Any, **kwargs: Any) -> T:
        app_id = signature.bind_partial(*args, **kwargs).arguments.get("app_id")
        commands = getattr(args[0] if args else None, "app_commands", None)  # the Ledger's
        if app_id is None or commands is None:
            return retried(*args, **kwargs)
        with commands.hold(app_id):
            return retried(*args, **kwargs)

    return queued


_ADJECTIVES = (
    "amber",
    "brave",
    "calm",
    "dapper",
    "eager",
    "fancy",
    "gentle",
    "hidden",
    "icy",
    "jolly",
    "keen",
    "lively",
    "mellow",
    "nimble",
    "polar",
    "quiet",
    "rapid",
    "shiny",
    "tidy",
    "vast",
)
_NOUNS = (
    "anchor",
    "brook",
    "cliff",
    "dune",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "island",
    "jungle",
    "kettle",
    "lagoon",
    "meadow",
    "nebula",
    "oasis",
    "peak",
    "quartz",
    "river",
    "summit",
    "tundra",
)


class Ledger(Application[UUID]):
    name = "waka"
    snapshotting_intervals: ClassVar = {App: SNAPSHOT_INTERVAL, Addon: SNAPSHOT_INTERVAL}

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        # Only the settings given by the composition root count. The library would also read
        # the process environment, where `WAKA_<KEY>` (our own variables' prefix) wins over them.
        merged = dict(type(self).env)
        if type(self).is_snapshotting_enabled or type(self).snapshotting_intervals:
            merged["IS_SNAPSHOTTING_ENABLED"] = "y"
        merged.update(env or {})
        if merged.get("CIPHER_TOPIC") == ledger_cipher.LIBRARY_TOPIC:
            merged["CIPHER_TOPIC"] = ledger_cipher.TOPIC  # the same bytes, ~50x less CPU
        return Environment(name, merged)

    # --- the command path: loading and saving aggregates ------------------------------------

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app_commands = _AppCommands()  # see retry_on_conflict

    def construct_repository(self) -> CachingRepository:
        """Aggregates cached between commands (see ledger_repository.py); the setting
        AGGREGATE_CACHE_MAXSIZE=0 turns the cache off."""
        size = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return CachingRepository(
            self.events,
            snapshot_store=self.snapshots,
            maxsize=AGGREGATE_CACHE_SIZE if size is None or size == "" else int(size),
        )

    # The highest notification id this process has recorded: the projector knows from it,
    # without asking the store, that there is something of ours to catch up with.
    last_recorded = 0

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        recordings = super()._record(processing_event)
        if recordings:
            self.last_recorded = max(self.last_recorded, recordings[-1].notification.id)
        return recordings

    # --- notifications --------------------------------------------------------------------

    _listeners: tuple[Callable[[list[Any]], None], ...] = ()

    def listen(self, listener: Callable[[list[Any]], None]) -> Callable[[], None]:
        """Call `listener(events)` right after every save made in this process, so a reactor
        here is woken by the ledger at once (other processes' writes reach it by its resync).
        Returns the function that stops it."""
        self._listeners = (*self._listeners, listener)

        def stop() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return stop

    def _notify(self, recordings: list[Any]) -> None:
        events = [r.domain_event for r in recordings]
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:  # the events are saved: a listener's fault is not the writer's
                log.exception("ledger listener %r failed", listener)

    # --- accounts -------------------------------------------------------------------------

    def register_user(
        self, email: str, name: str = "", actor: Actor = OPERATOR
    ) -> tuple[Account, str]:
        """Create a user and return it with its API key (shown once, stored only hashed)."""
        email = rules.check_email(email)
        key = new_api_key()
        account = Account(email=email, name=name or "", key_hash=hash_api_key(key), actor=actor)
        try:
            self.save(account)
        except RecordConflictError:
            raise Conflict(f"A user with email {email} already exists.") from None
        return account, key

    @retry_on_conflict
    def regenerate_api_key(self, email: str, actor: Actor = OPERATOR) -> tuple[Account, str]:
        account = self.get_account(email)
        key = new_api_key()
        account.regenerate_key(key_hash=hash_api_key(key), actor=actor)
        self.save(account)
        return account, key

    def get_account(self, email: str) -> Account:
        try:
            return self.repository.get(Account.id_for(email))
        except AggregateNotFoundError:
            raise NotFound(f"Couldn't find a user with email {email}.") from None

    @retry_on_conflict
    def set_password(self, email: str, password: str, actor: Actor = OPERATOR) -> Account:
        account = self.get_account(email)
        account.set_password(password_hash=hash_password(check_password(password)), actor=actor)
        self.save(account)
        return account

    # --- OAuth authorizations (sign-in sessions and long-lived tokens) --------------------

    def create_authorization(
        self,
        user: Actor,
        description: str,
        scope: list[str],
        expires_in: int | None,
        via: str,
    ) -> tuple[Authorization, str]:
        """A new token for `user` (shown once, stored only hashed), made by `user` itself."""
        token = new_api_key()
        authorization = Authorization(
            user_id=user["id"],
            description=description,
            scope=scope,
            expires_in=expires_in,
            expires_at=authorization_expiry(expires_in),
            token_hash=hash_api_key(token),
            token_hint=token_hint(token),
            via=via,
            actor=user,
        )
        self.save(authorization)
        return authorization, token

    def get_authorization(self, authorization_id: UUID, user: Actor) -> Authorization:
        """The user's own authorization, not revoked; anything else is not found."""
        try:
            authorization: Authorization = self.repository.get(authorization_id)
        except AggregateNotFoundError:
            authorization = None  # type: ignore[assignment]
        if (
            not isinstance(authorization, Authorization)
            or authorization.user_id != user["id"]
            or authorization.revoked
        ):
            raise NotFound("Couldn't find that authorization.")
        return authorization

    @retry_on_conflict
    def update_authorization(
        self, authorization_id: UUID, description: str, actor: Actor
    ) -> Authorization:
        authorization = self.get_authorization(authorization_id, actor)
        if description != authorization.description:
            authorization.update(description=description, actor=actor)
            self.save(authorization)
        return authorization

    @retry_on_conflict
    def revoke_authorization(self, authorization_id: UUID, actor: Actor) -> Authorization:
        authorization = self.get_authorization(authorization_id, actor)
        authorization.revoke(actor=actor)
        self.save(authorization)
        return authorization

    @retry_on_conflict
    def rotate_authorization(
        self, authorization_id: UUID, actor: Actor
    ) -> tuple[Authorization, str]:
        authorization = self.get_authorization(authorization_id, actor)
        token = new_api_key()
        authorization.rotate(
            token_hash=hash_api_key(token),
            token_hint=token_hint(token),
            expires_at=authorization_expiry(authorization.expires_in),
            actor=actor,
        )
        self.save(authorization)
        return authorization, token

    # --- apps -----------------------------------------------------------------------------

    @retry_on_conflict
    def create_app(
        self,
        actor: Actor,
        name: str | None = None,
        region: str | None = None,
        stack: str | None = None,
        team: str | None = None,
    ) -> App:
        """`team`: made in (and owned by) that team, by one of its admins or members."""
        region = rules.check_region(region or rules.DEFAULT_REGION)
        stack = rules.check_stack(stack or rules.DEFAULT_STACK)
        made = self.made_by(App, actor)
        if made is not None:  # this request again: answered with the app it made
            asked = (name or made.name, region, stack)
            if made.destroyed or asked != (made.name, made.region, made.stack):
                raise Conflict("This Request-Id was used to create another app.")
            return made
        if name is None:
            return self._create_with_generated_name(actor, region, stack, team)
        return self._create_named_app(actor, name, region, stack, team)

    def _create_named_app(
        self, actor: Actor, name: str, region: str, stack: str, team: str | None
    ) -> App:
        rules.check_app_name(name)
        if team is None:
            app = App.create(
                name=name, owner=person(actor), region=region, stack=stack, actor=actor
            )
        else:
            owning = self.get_team(team, actor)
            if owning.role_of(actor["id"]) not in (ADMIN, MEMBER):
                raise access.denied_team(owning.name)
            owner = owner_of(str(owning.id), owning.name)
            app = App.create(name=name, owner=owner, region=region, stack=stack, actor=actor)
            app.join_team({"id": str(owning.id), "name": owning.name}, actor)
        self.save(self._claim(AppName, name, app.id, actor), app)
        return app

    def _create_with_generated_name(
        self, actor: Actor, region: str, stack: str, team: str | None = None
    ) -> App:
        for _ in range(20):
            name = (
                f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-"
                f"{secrets.randbelow(90000) + 10000}"
            )
            try:
                return self._create_named_app(actor, name, region, stack, team)
            except NameTaken:
                continue
        raise Conflict("Could not find a free app name; please choose one.")

    def made_by(self, kind: type[T], actor: Actor) -> T | None:
        """What this actor's request made already, if it is a request sent again (its id is
        derived from the request's: `made_by_request`)."""
        if not actor.get("request_id"):
            return None
        try:
            made = self.repository.get(kind.create_id(actor))  # type: ignore[attr-defined]
        except AggregateNotFoundError:
            return None
        return made if isinstance(made, kind) else None

    def _claim(self, kind: type[AppName], name: str, app_id: UUID, actor: Actor) -> AppName:
        """Claim `name` in an index (app names, domains) for this app."""
        try:
            index: AppName = self.repository.get(kind.id_for(name))
        except AggregateNotFoundError:
            return kind(name=name, app_id=app_id, actor=actor)
        index.claim(app_id, actor)
        return index

    def _live_app(self, app_id: UUID, actor: Actor, permission: str = access.DEPLOY) -> App:
        """The app, if it is live and the access policy lets the actor do `permission` to it."""
        app = self.get_app(app_id)
        if app.destroyed:
            raise NotFound("Couldn't find that app.")
        app.check_access(actor, permission, self.team_roles(app))
        return app

    def team_roles(self, app: App) -> dict[str, str] | None:
        """The roles in the team that owns the app, for the access policy; None if personal."""
        if app.team is None:
            return None
        return self._team(UUID(app.team["id"])).roles()

    def get_app(self, app_id: UUID, version: int | None = None) -> App:
        try:
            app: App = self.repository.get(app_id, version=version)
        except AggregateNotFoundError:
            raise NotFound("Couldn't find that app.") from None
        if not isinstance(app, App):
            raise NotFound("Couldn't find that app.")
        return app

    def _command(
        self,
        app_id: UUID,
        actor: Actor,
        action: Callable[[App], T],
        permission: str = access.DEPLOY,
    ) -> tuple[App, T]:
        app = self._live_app(app_id, actor, permission)
        result = action(app)
        self.save(app)
        return app, result

    @retry_on_conflict
    def set_config(self, actor: Actor, app_id: UUID, changes: dict[str, Any]) -> App:
        return self._command(app_id, actor, lambda app: app.set_config(changes, actor))[0]

    @retry_on_conflict
    def scale(self, actor: Actor, app_id: UUID, updates: list[dict[str, Any]]) -> App:
        operate = access.OPERATE
        return self._command(app_id, actor, lambda app: app.scale(updates, actor), operate)[0]

    @retry_on_conflict
    def set_maintenance(self, actor: Actor, app_id: UUID, enabled: bool) -> App:
        def change(app: App) -> None:
            app.set_maintenance(enabled, actor)

        return self._command(app_id, actor, change, access.OPERATE)[0]

    @retry_on_conflict
    def rollback(self, actor: Actor, app_id: UUID, release_version: int) -> App:
        """Replay the ledger to release vN and append "Rollback to vN" with its slug and config."""
        app = self._live_app(app_id, actor)
        target = self.get_app(app_id, version=app.aggregate_version_of(release_version))
        app.rollback(target, release_version, actor)
        self.save(app)
        return app

    # --- builds ---------------------------------------------------------------------------

    @retry_on_conflict
    def request_build(
        self,
        actor: Actor,
        app_id: UUID,
        source_url: str,
        source_version: str = "",
        build_id: str | None = None,
    ) -> str:
        """Queue a build of the source tarball at `source_url`; the builder picks it up.
        A caller may choose the id (the git hook records it before the build exists)."""
        build_id = build_id or str(uuid4())
        self._command(
            app_id,
            actor,
            lambda app: app.request_build(build_id, source_url, source_version, actor),
        )
        return build_id

    @retry_on_conflict
    def fail_build(self, app_id: UUID, build_id: str, reason: str, actor: Actor) -> bool:
        app = self.get_app(app_id)
        if app.fail_build(build_id, reason, actor):
            self.save(app)
            return True
        return False

    @retry_on_conflict
    def finish_build(
        self,
        app_id: UUID,
        build_id: str,
        slug: dict[str, Any],
        release_failure: str | None,
        actor: Actor,
    ) -> int | None:
        """Record a built slug and its release; idempotent for a build already finished."""
        app = self.get_app(app_id)
        version = app.finish_build(build_id, slug, release_failure, actor)
        if version is not None:
            self.save(app)
        return version

    @retry_on_conflict
    def request_release_phase(
        self, app_id: UUID, build_id: str, slug: dict[str, Any], actor: Actor
    ) -> dict[str, Any]:
        """A build's release takes its version (pending) before its release phase runs;
        returns the pending release ({"version", ...}); the same one when asked again."""
        app = self.get_app(app_id)
        before = app.version
        pending = app.request_release_phase(build_id, slug, str(uuid4()), actor)
        if app.version != before:
            self.save(app)
        return pending

    @retry_on_conflict
    def release_slug(
        self, actor: Actor, app_id: UUID, slug: dict[str, Any], description: str
    ) -> tuple[App, int]:
        """A new release of a slug this app built; pending while its release phase runs."""
        return self._command(
            app_id, actor, lambda app: app.release_slug(slug, description, str(uuid4()), actor)
        )

    @retry_on_conflict
    def finish_release(self, app_id: UUID, version: int, failure: str | None, actor: Actor) -> bool:
        """A pending slug release's release phase ended; idempotent."""
        app = self.get_app(app_id)
        if app.finish_release(version, failure, actor):
            self.save(app)
            return True
        return False

    @retry_on_conflict
    def set_buildpacks(self, actor: Actor, app_id: UUID, buildpacks: list[str]) -> App:
        return self._command(app_id, actor, lambda app: app.set_buildpacks(buildpacks, actor))[0]

    @retry_on_conflict
    def clear_build_cache(self, actor: Actor, app_id: UUID) -> App:
        return self._command(app_id, actor, lambda app: app.clear_build_cache(actor))[0]

    @retry_on_conflict
    def restart_dynos(self, actor: Actor, app_id: UUID, target: str = "") -> App:
        operate = access.OPERATE
        return self._command(app_id, actor, lambda app: app.restart(target, actor), operate)[0]

    # --- one-off dynos --------------------------------------------------------------------

    def one_off_started_by(self, actor: Actor, app_id: UUID, command: str) -> str | None:
        """The name of the detached one-off this request started, if it is sent again."""
        return self._live_app(app_id, actor).one_off_started_by(actor, command)

    @retry_on_conflict
    def record_one_off(self, actor: Actor, app_id: UUID, name: str, command: str) -> None:
        self._command(app_id, actor, lambda app: app.record_one_off(name, command, actor))

    # --- custom domains -------------------------------------------------------------------

    @retry_on_conflict
    def add_domain(self, actor: Actor, app_id: UUID, hostname: str) -> str:
        app = self._live_app(app_id, actor)
        hostname, added = app.add_domain(hostname, actor)
        if added:  # (else this request sent again: the name is claimed already)
            self.save(app, self._claim(DomainName, hostname, app.id, actor))
        return hostname

    @retry_on_conflict
    def remove_domain(self, actor: Actor, app_id: UUID, hostname: str) -> str:
        app = self._live_app(app_id, actor)
        hostname, removed = app.remove_domain(hostname, actor)
        if removed:  # (else this request sent again: the name is free already)
            claim: DomainName = self.repository.get(DomainName.id_for(hostname))
            claim.free(actor)
            self.save(app, claim)
        return hostname

    # --- log drains -----------------------------------------------------------------------

    @retry_on_conflict
    def add_drain(self, actor: Actor, app_id: UUID, url: str) -> dict[str, str]:
        drain = {"id": str(uuid4()), "url": url, "token": f"d.{uuid4()}"}
        return self._command(
            app_id, actor, lambda app: app.add_drain(drain["id"], url, drain["token"], actor)
        )[1]

    @retry_on_conflict
    def remove_drain(self, actor: Actor, app_id: UUID, id_or_url: str) -> dict[str, str]:
        return self._command(app_id, actor, lambda app: app.remove_drain(id_or_url, actor))[1]

    def destroyed_by(self, actor: Actor, id_or_name: str) -> App | None:
        """The app this actor's request destroyed, when this is that request sent again (the
        CLI's retry of a destroy whose answer it lost): it is answered, not refused as gone."""
        try:
            app_id: UUID | None = UUID(id_or_name)
        except ValueError:
            try:
                index: AppName = self.repository.get(AppName.id_for(id_or_name))
            except AggregateNotFoundError:
                return None
            app_id = getattr(index, "freed_from", None) if index.app_id is None else None
        if app_id is None:
            return None
        try:
            app = self.get_app(app_id)
        except NotFound:
            return None
        return app if app.destroyed_by_request(actor) else None

    def config_at_release(self, app_id: UUID, release_version: int) -> dict[str, str]:
        app = self.get_app(app_id)
        return dict(self.get_app(app_id, version=app.aggregate_version_of(release_version)).config)

    @retry_on_conflict
    def rename_app(self, actor: Actor, app_id: UUID, new_name: str) -> App:
        app = self._live_app(app_id, actor, access.MANAGE)
        self._rename(app, AppName, new_name, actor)
        return app

    def _rename(self, owner: Any, kind: type[AppName], new_name: str, actor: Actor) -> None:
        """Rename an app or add-on: free its old name in the index, claim the new one."""
        old_name = owner.name
        owner.rename(new_name, actor)
        if owner.name == old_name:
            return
        old_index: AppName = self.repository.get(kind.id_for(old_name))
        old_index.free(actor)
        self.save(owner, old_index, self._claim(kind, new_name, owner.id, actor))

    @retry_on_conflict
    def destroy_app(self, actor: Actor, app_id: UUID) -> App:
        """Destroy the app, its add-ons (detached from every app first; their resources are
        removed by the add-on reactor) and its attachments of other apps' add-ons."""
        app = self._live_app(app_id, actor, access.MANAGE)
        changed: dict[UUID, Any] = {}
        for addon_id in list(app.addons):
            addon = self.get_addon(UUID(addon_id))
            if addon.live:
                self._remove_addon(addon, actor, changed, billing=app, destroying=True)
        for attachment, held in list(app.attachments.items()):
            addon = changed.get(UUID(held["addon_id"])) or self.get_addon(UUID(held["addon_id"]))
            if attachment in addon.attachments:
                addon.detach(attachment, actor)
                changed[addon.id] = addon
        app.destroy(actor)
        index: AppName = self.repository.get(AppName.id_for(app.name))
        index.free(actor)
        domains: list[AppName] = [self.repository.get(DomainName.id_for(d)) for d in app.domains]
        for claim in domains:
            claim.free(actor)
        changed.pop(app.id, None)
        self.save(app, index, *domains, *changed.values())
        return app

    # --- collaborators --------------------------------------------------------------------

    @retry_on_conflict
    def add_collaborator(
        self, actor: Actor, app_id: UUID, email: str, permissions: list[str] | None = None
    ) -> Actor:
        """Grant a user access to the app (a personal app's collaborator: all but manage)."""
        app = self.get_app(app_id)
        if app.destroyed:
            raise NotFound("Couldn't find that app.")
        account = self.get_account(email)
        user = {"id": str(account.id), "email": account.email}
        granted = list(access.COLLABORATOR) if permissions is None else permissions
        if app.add_collaborator(user, granted, actor, self.team_roles(app)):
            self.save(app)
        return user

    @retry_on_conflict
    def remove_collaborator(self, actor: Actor, app_id: UUID, user: str) -> Actor:
        """Revoke a collaborator (by id or email); the collaborator may remove themselves."""
        app = self._live_app(app_id, actor, access.VIEW)  # remove_collaborator decides
        removed = app.remove_collaborator(user, actor, self.team_roles(app))
        self.save(app)
        return removed

    @retry_on_conflict
    def set_app_locked(self, actor: Actor, app_id: UUID, locked: bool) -> App:
        app = self._live_app(app_id, actor, access.VIEW)  # set_locked asks for manage
        if app.set_locked(locked, actor, self.team_roles(app) or {}):
            self.save(app)
        return app

    @retry_on_conflict
    def request_transfer(self, actor: Actor, app_id: UUID, recipient_email: str) -> str:
        """`heroku apps:transfer EMAIL`: a pending offer the recipient accepts; its id."""
        app = self._live_app(app_id, actor, access.MANAGE)
        account = self.get_account(recipient_email)
        transfer_id = str(uuid4())
        app.request_transfer(transfer_id, {"id": str(account.id), "email": account.email}, actor)
        self.save(app)
        return transfer_id

    @retry_on_conflict
    def answer_transfer(self, actor: Actor, app_id: UUID, transfer_id: str, state: str) -> App:
        app = self.get_app(app_id)
        if app.destroyed:
            raise NotFound("Couldn't find that app transfer.")
        app.answer_transfer(transfer_id, state, actor)
        self.save(app)
        return app

    @retry_on_conflict
    def transfer_to_team(self, actor: Actor, app_id: UUID, team_name: str) -> App:
        """`heroku apps:transfer TEAM`: into a team the actor is an admin or member of."""
        app = self._live_app(app_id, actor, access.MANAGE)
        team = self.get_team(team_name, actor)
        app.transfer_to_team(
            {"id": str(team.id), "name": team.name},
            owner_of(str(team.id), team.name),
            actor,
            team.roles(),
        )
        self.save(app)
        return app

    # --- teams ----------------------------------------------------------------------------

    def create_team(self, actor: Actor, name: str, admin_email: str | None = None) -> Team:
        """A new team whose first admin is `admin_email` (the operator's `waka teams:create`)
        or the actor (`POST /teams`)."""
        check_team_name(name)
        if admin_email is not None:
            account = self.get_account(admin_email)
            admin = {"id": str(account.id), "email": account.email}
        else:
            admin = actor
        team = Team(name=name, admin=admin, actor=actor)
        try:
            self.save(team)
        except RecordConflictError:
            raise Conflict(f"A team named {name} already exists.") from None
        return team

    def _team(self, team_id: UUID) -> Team:
        try:
            team: Team = self.repository.get(team_id)
        except AggregateNotFoundError:
            raise NotFound("Couldn't find that team.") from None
        if not isinstance(team, Team):
            raise NotFound("Couldn't find that team.")
        return team

    def get_team(self, name: str, actor: Actor) -> Team:
        """The team by name, if the actor is in it (others are told it does not exist)."""
        team = self._team(Team.id_for(name)) if name else None
        if team is None:
            raise NotFound("Couldn't find that team.")
        team.check_member(actor)
        return team

    @retry_on_conflict
    def set_team_member(self, actor: Actor, team_name: str, email: str, role: str) -> Actor:
        team = self.get_team(team_name, actor)
        account = self.get_account(email)
        user = {"id": str(account.id), "email": account.email}
        if team.set_member(user, role, actor):
            self.save(team)
        return user

    @retry_on_conflict
    def remove_team_member(self, actor: Actor, team_name: str, email: str) -> Actor:
        team = self.get_team(team_name, actor)
        removed = team.remove_member(email, actor)
        self.save(team)
        return removed

    # --- add-ons --------------------------------------------------------------------------

    def get_addon(self, addon_id: UUID) -> Addon:
        try:
            addon: Addon = self.repository.get(addon_id)
        except AggregateNotFoundError:
            raise NotFound("Couldn't find that add-on.") from None
        if not isinstance(addon, Addon):
            raise NotFound("Couldn't find that add-on.")
        return addon

    def addon_destroyed_by(self, actor: Actor, addon_id: UUID) -> Addon | None:
        """The add-on this actor's request destroyed, when this is that request sent again."""
        try:
            addon = self.get_addon(addon_id)
        except NotFound:
            return None
        return addon if addon.destroyed_by_request(actor) else None

    def _live_addon(self, addon_id: UUID, actor: Actor) -> tuple[Addon, App]:
        """The add-on and its billing app, if the actor may act on them."""
        addon = self.get_addon(addon_id)
        if not addon.live:
            raise NotFound("Couldn't find that add-on.")
        return addon, self._live_app(UUID(addon.app_id), actor)

    @retry_on_conflict
    def create_addon(
        self,
        actor: Actor,
        app_id: UUID,
        plan: str,
        name: str | None = None,
        attachment_name: str | None = None,
    ) -> Addon:
        """Ask for an add-on; the add-on reactor makes its resource and attaches it."""
        service, chosen = resolve_plan(plan)
        app = self._live_app(app_id, actor)
        made = self.made_by(Addon, actor)
        if made is not None:  # this request again: answered with the add-on it made
            asked = (name or made.name, service.name, chosen.name, str(app.id))
            if not made.live or asked != (made.name, made.service, made.plan, made.app_id):
                raise Conflict("This Request-Id was used to create another add-on.")
            return made
        if attachment_name is not None:
            attachment_name = rules.check_attachment_name(attachment_name)
            if attachment_name in app.attachment_names():
                raise Conflict(f"{app.name} already has an add-on attached as {attachment_name}.")
        if name is None:
            return self._create_addon_with_generated_name(
                actor, app, service, chosen, attachment_name
            )
        return self._create_named_addon(actor, app, service, chosen, name, attachment_name)

    def _create_named_addon(
        self,
        actor: Actor,
        app: App,
        service: Service,
        chosen: Plan,
        name: str,
        attachment_name: str | None,
    ) -> Addon:
        rules.check_addon_name(name)
        addon = Addon(
            name=name,
            service=service.name,
            plan=chosen.name,
            app_id=str(app.id),
            app_name=app.name,
            attachment_name=attachment_name,
            actor=actor,
        )
        app.own_addon(str(addon.id), actor)
        self.save(addon, app, self._claim(AddonName, name, addon.id, actor))
        return addon

    def _create_addon_with_generated_name(
        self,
        actor: Actor,
        app: App,
        service: Service,
        plan: Plan,
        attachment_name: str | None,
    ) -> Addon:
        for _ in range(20):
            name = (
                f"{service.addon_prefix}-{secrets.choice(_ADJECTIVES)}-"
                f"{secrets.randbelow(90000) + 10000}"
            )
            try:
                return self._create_named_addon(actor, app, service, plan, name, attachment_name)
            except NameTaken:  # the app took the add-on before the save failed: load it again
                app = self._live_app(app.id, actor)
        raise Conflict("Could not find a free add-on name; please choose one.")

    @retry_on_conflict
    def complete_provisioning(self, addon_id: UUID, config: dict[str, str], actor: Actor) -> bool:
        """Record the made resource and attach it to its app, in one save: an add-on is never
        half-attached. False if there is nothing to do (already done, or being removed)."""
        addon = self.get_addon(addon_id)
        if addon.state != PROVISIONING:
            return False
        app = self.get_app(UUID(addon.app_id))
        service = find_service(addon.service)
        assert service is not None
        try:
            names = attachment_names(
                service.default_attachment,
                service.color_prefix,
                service.color_alias,
                app.attachment_names(),
                addon.id,
                addon.attachment_name,
            )
            attachments = [
                {"id": str(attachment_id(addon.id, app.id, n)), "name": n, "plan": addon.plan_name}
                for n in names
            ]
            app.attach_addon(str(addon.id), addon.name, attachments, config, actor)
        except (Conflict, InvalidParams, NotFound) as exc:
            addon.fail(f"Could not attach to {app.name}: {exc.message}", actor)
            self.save(addon)
            return False
        addon.provisioned(config, actor)
        for attachment in attachments:
            addon.attach(attachment["id"], str(app.id), attachment["name"], actor)
        self.save(addon, app)
        return True

    @retry_on_conflict
    def fail_provisioning(self, addon_id: UUID, reason: str, actor: Actor) -> bool:
        addon = self.get_addon(addon_id)
        if addon.fail(reason, actor):
            self.save(addon)
            return True
        return False

    @retry_on_conflict
    def finish_deprovisioning(self, addon_id: UUID, actor: Actor) -> bool:
        addon = self.get_addon(addon_id)
        if addon.deprovisioned(actor):
            self.save(addon)
            return True
        return False

    @retry_on_conflict
    def attach_addon(
        self, actor: Actor, addon_id: UUID, app_id: UUID, name: str | None = None
    ) -> str:
        """Attach an add-on to another app (or again to its own) under a name; returns the
        attachment's id. The app gets the add-on's config vars in a new release."""
        addon, _ = self._live_addon(addon_id, actor)
        app = self._live_app(app_id, actor)
        again = addon.attached_by(actor, str(app.id))
        if again is not None:  # this request sent again: answered with what it attached
            return again
        addon.check_attachable()  # before naming the attachment: the clearer error first
        service = find_service(addon.service)
        assert service is not None
        requested = rules.check_attachment_name(name) if name else None
        names = attachment_names(
            service.default_attachment,
            service.color_prefix,
            False,
            app.attachment_names(),
            addon.id,
            requested,
        )
        attachment = {
            "id": str(attachment_id(addon.id, app.id, names[0])),
            "name": names[0],
            "plan": addon.plan_name,
        }
        app.attach_addon(str(addon.id), addon.name, [attachment], addon.config, actor)
        addon.attach(attachment["id"], str(app.id), attachment["name"], actor)
        self.save(addon, app)
        return attachment["id"]

    @retry_on_conflict
    def detach_addon(self, actor: Actor, addon_id: UUID, attachment: str) -> App:
        """Remove one attachment; its app loses the config vars in a new release."""
        addon = self.get_addon(addon_id)
        if attachment not in addon.attachments:
            raise NotFound("Couldn't find that add-on attachment.")
        app = self._live_app(UUID(addon.attachments[attachment]["app_id"]), actor)
        self._live_app(UUID(addon.app_id), actor)
        app.detach_addon([attachment], addon.name, actor)
        addon.detach(attachment, actor)
        self.save(addon, app)
        return app

    @retry_on_conflict
    def destroy_addon(self, actor: Actor, addon_id: UUID) -> Addon:
        """Detach the add-on everywhere (a release on each app) and ask for its removal."""
        addon, billing = self._live_addon(addon_id, actor)
        changed: dict[UUID, Any] = {}
        self._remove_addon(addon, actor, changed, billing=billing)
        self.save(*changed.values())
        return addon

    def _remove_addon(
        self,
        addon: Addon,
        actor: Actor,
        changed: dict[UUID, Any],
        billing: App,
        destroying: bool = False,
    ) -> None:
        """Detach everywhere and ask for removal; `destroying`: the billing app is being
        destroyed, so it makes no release of its own."""
        by_app: dict[str, list[str]] = {}
        for attachment, held in addon.attachments.items():
            by_app.setdefault(held["app_id"], []).append(attachment)
        for app_id, attachments in by_app.items():
            app = billing if app_id == str(billing.id) else self.get_app(UUID(app_id))
            if not app.destroyed and not (destroying and app is billing):
                app.detach_addon(attachments, addon.name, actor)
                changed[app.id] = app
            for attachment in attachments:
                addon.detach(attachment, actor)
        billing.forget_addon(str(addon.id), actor)
        changed[billing.id] = billing
        addon.request_deprovision(actor)
        index: AddonName = self.repository.get(AddonName.id_for(addon.name))
        index.free(actor)
        changed[addon.id] = addon
        changed[index.id] = index

    @retry_on_conflict
    def change_addon_plan(self, actor: Actor, addon_id: UUID, plan: str) -> Addon:
        """`addons:upgrade`: the same resource and URL, the new plan's limits (no release)."""
        addon, _ = self._live_addon(addon_id, actor)
        service, chosen = resolve_plan(plan if ":" in str(plan) else f"{addon.service}:{plan}")
        if service.name != addon.service:
            raise InvalidParams(
                f"{addon.name} is a {addon.service} add-on: choose one of that service's plans."
            )
        if addon.change_plan(chosen.name, actor):
            self.save(addon)
        return addon

    @retry_on_conflict
    def request_reset(self, actor: Actor, addon_id: UUID) -> int:
        """`pg:reset`: the add-on manager empties the database; its URL stays the same."""
        addon, _ = self._live_addon(addon_id, actor)
        reset = addon.request_reset(actor)
        self.save(addon)
        return reset

    @retry_on_conflict
    def finish_reset(self, addon_id: UUID, reset: int, actor: Actor) -> bool:
        addon = self.get_addon(addon_id)
        if addon.reset_done(reset, actor):
            self.save(addon)
            return True
        return False

    @retry_on_conflict
    def rename_addon(self, actor: Actor, addon_id: UUID, new_name: str) -> Addon:
        addon, _ = self._live_addon(addon_id, actor)
        rules.check_addon_name(new_name)
        self._rename(addon, AddonName, new_name, actor)
        return addon


def resolve_plan(spec: object) -> tuple[Service, Plan]:
    """ "heroku-postgresql:essential-0" or "heroku-postgresql" (its default plan)."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidParams("Give a plan, as in heroku-postgresql:essential-0.")
    service_name, _, plan_name = spec.strip().partition(":")
    service = find_service(service_name)
    plan = service and (service.find_plan(plan_name) if plan_name else service.default_plan)
    if service is None or plan is None:
        raise InvalidParams(
            f'Couldn\'t find either the add-on service or the add-on plan of "{spec}".'
        )
    return service, plan


def new_api_key() -> str:
    return "HRKU-" + secrets.token_urlsafe(32)
