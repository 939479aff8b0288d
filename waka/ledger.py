"""The ledger: an eventsourcing Application holding the App, AppName and Account aggregates.

Commands load aggregates, call domain methods and save; a concurrent writer on the same
stream makes the save fail with a conflict, and the command is retried on fresh state, so
no update is ever lost. Reads go to the projections, not here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import RecordConflictError
from eventsourcing.utils import Environment, EnvType
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from waka.domain import rules
from waka.domain.account import Account, hash_api_key
from waka.domain.actors import OPERATOR, Actor
from waka.domain.app import App
from waka.domain.errors import Conflict, NameTaken, NotFound
from waka.domain.names import AppName, DomainName

T = TypeVar("T")

SNAPSHOT_INTERVAL = 100

# Concurrent commands on one stream: retry on a version conflict, with jitter so that
# parallel writers spread out. 20 tries at <=0.2 s covers dozens of writers on one app.
retry_on_conflict = retry(
    retry=retry_if_exception_type(RecordConflictError),
    stop=stop_after_attempt(20),
    wait=wait_random_exponential(multiplier=0.005, max=0.2),
    reraise=True,
)

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
    snapshotting_intervals: ClassVar = {App: SNAPSHOT_INTERVAL}

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        # Only the settings given by the composition root count. The library would also read
        # the process environment, where `WAKA_<KEY>` (our own variables' prefix) wins over them.
        merged = dict(type(self).env)
        if type(self).is_snapshotting_enabled or type(self).snapshotting_intervals:
            merged["IS_SNAPSHOTTING_ENABLED"] = "y"
        merged.update(env or {})
        return Environment(name, merged)

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

    # --- apps -----------------------------------------------------------------------------

    @retry_on_conflict
    def create_app(
        self,
        actor: Actor,
        name: str | None = None,
        region: str | None = None,
        stack: str | None = None,
    ) -> App:
        region = rules.check_region(region or rules.DEFAULT_REGION)
        stack = rules.check_stack(stack or rules.DEFAULT_STACK)
        if name is None:
            return self._create_with_generated_name(actor, region, stack)
        rules.check_app_name(name)
        app = App.create(name=name, owner=actor, region=region, stack=stack)
        self.save(self._claim(AppName, name, app.id, actor), app)
        return app

    def _create_with_generated_name(self, actor: Actor, region: str, stack: str) -> App:
        for _ in range(20):
            name = (
                f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-"
                f"{secrets.randbelow(90000) + 10000}"
            )
            try:
                return self.create_app(actor, name, region, stack)
            except NameTaken:
                continue
        raise Conflict("Could not find a free app name; please choose one.")

    def _claim(self, kind: type[AppName], name: str, app_id: UUID, actor: Actor) -> AppName:
        """Claim `name` in an index (app names, domains) for this app."""
        try:
            index: AppName = self.repository.get(kind.id_for(name))
        except AggregateNotFoundError:
            return kind(name=name, app_id=app_id, actor=actor)
        index.claim(app_id, actor)
        return index

    def _live_app(self, app_id: UUID, actor: Actor) -> App:
        app = self.get_app(app_id)
        if app.destroyed:
            raise NotFound("Couldn't find that app.")
        app.check_access(actor)
        return app

    def get_app(self, app_id: UUID, version: int | None = None) -> App:
        try:
            app: App = self.repository.get(app_id, version=version)
        except AggregateNotFoundError:
            raise NotFound("Couldn't find that app.") from None
        if not isinstance(app, App):
            raise NotFound("Couldn't find that app.")
        return app

    def _command(self, app_id: UUID, actor: Actor, action: Callable[[App], T]) -> tuple[App, T]:
        app = self._live_app(app_id, actor)
        result = action(app)
        self.save(app)
        return app, result

    @retry_on_conflict
    def set_config(self, actor: Actor, app_id: UUID, changes: dict[str, Any]) -> App:
        return self._command(app_id, actor, lambda app: app.set_config(changes, actor))[0]

    @retry_on_conflict
    def scale(self, actor: Actor, app_id: UUID, updates: list[dict[str, Any]]) -> App:
        return self._command(app_id, actor, lambda app: app.scale(updates, actor))[0]

    @retry_on_conflict
    def set_maintenance(self, actor: Actor, app_id: UUID, enabled: bool) -> App:
        return self._command(app_id, actor, lambda app: app.set_maintenance(enabled, actor))[0]

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
        self, actor: Actor, app_id: UUID, source_url: str, source_version: str = ""
    ) -> str:
        """Queue a build of the source tarball at `source_url`; the builder picks it up."""
        build_id = str(uuid4())
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
    def set_buildpacks(self, actor: Actor, app_id: UUID, buildpacks: list[str]) -> App:
        return self._command(app_id, actor, lambda app: app.set_buildpacks(buildpacks, actor))[0]

    @retry_on_conflict
    def clear_build_cache(self, actor: Actor, app_id: UUID) -> App:
        return self._command(app_id, actor, lambda app: app.clear_build_cache(actor))[0]

    @retry_on_conflict
    def restart_dynos(self, actor: Actor, app_id: UUID, target: str = "") -> App:
        return self._command(app_id, actor, lambda app: app.restart(target, actor))[0]

    # --- custom domains -------------------------------------------------------------------

    @retry_on_conflict
    def add_domain(self, actor: Actor, app_id: UUID, hostname: str) -> str:
        app = self._live_app(app_id, actor)
        hostname = app.add_domain(hostname, actor)
        self.save(app, self._claim(DomainName, hostname, app.id, actor))
        return hostname

    @retry_on_conflict
    def remove_domain(self, actor: Actor, app_id: UUID, hostname: str) -> str:
        app = self._live_app(app_id, actor)
        hostname = app.remove_domain(hostname, actor)
        claim: DomainName = self.repository.get(DomainName.id_for(hostname))
        claim.free(actor)
        self.save(app, claim)
        return hostname

    # --- log drains -----------------------------------------------------------------------

    @retry_on_conflict
    def add_drain(self, actor: Actor, app_id: UUID, url: str) -> dict[str, str]:
        drain = {"id": str(uuid4()), "url": url, "token": f"d.{uuid4()}"}
        self._command(
            app_id, actor, lambda app: app.add_drain(drain["id"], url, drain["token"], actor)
        )
        return drain

    @retry_on_conflict
    def remove_drain(self, actor: Actor, app_id: UUID, id_or_url: str) -> dict[str, str]:
        return self._command(app_id, actor, lambda app: app.remove_drain(id_or_url, actor))[1]

    def config_at_release(self, app_id: UUID, release_version: int) -> dict[str, str]:
        app = self.get_app(app_id)
        return dict(self.get_app(app_id, version=app.aggregate_version_of(release_version)).config)

    @retry_on_conflict
    def rename_app(self, actor: Actor, app_id: UUID, new_name: str) -> App:
        app = self._live_app(app_id, actor)
        old_name = app.name
        app.rename(new_name, actor)
        if app.name == old_name:
            return app
        old_index: AppName = self.repository.get(AppName.id_for(old_name))
        old_index.free(actor)
        self.save(app, old_index, self._claim(AppName, new_name, app.id, actor))
        return app

    @retry_on_conflict
    def destroy_app(self, actor: Actor, app_id: UUID) -> App:
        app = self._live_app(app_id, actor)
        app.destroy(actor)
        index: AppName = self.repository.get(AppName.id_for(app.name))
        index.free(actor)
        domains: list[AppName] = [self.repository.get(DomainName.id_for(d)) for d in app.domains]
        for claim in domains:
            claim.free(actor)
        self.save(app, index, *domains)
        return app


def new_api_key() -> str:
    return "HRKU-" + secrets.token_urlsafe(32)
