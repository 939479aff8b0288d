"""The composition root: the one place that wires settings, stores and the ledger together.

Tests build a platform here with their own settings (a temporary home, a PostgreSQL schema);
nothing else constructs stores, adapters or the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from waka.adapters import cipher_key
from waka.adapters.build_logs import BuildLogs, SharedBuildLogs
from waka.adapters.private_home import make_private
from waka.adapters.sources import SourceStore
from waka.config import Settings
from waka.ledger import Ledger
from waka.logplex import Logplex, open_logplex
from waka.projections.domains import domains_of
from waka.projections.projector import Projector
from waka.projections.sealing import Sealer
from waka.projections.store import PostgresReadStore, ReadStore, SqliteReadStore
from waka.router import Backend, Route, RouteTable

if TYPE_CHECKING:
    from waka.adapters.blobs import BlobStore
    from waka.adapters.build_cache import BuildCache
    from waka.adapters.dyno_states import DynoStates
    from waka.adapters.git_repos import GitRepos
    from waka.adapters.leases import Leases
    from waka.adapters.ledger_notifications import LedgerNotifications
    from waka.adapters.one_off import OneOffDynos
    from waka.adapters.runtime import Runtime
    from waka.adapters.slugs import SlugStore
    from waka.adapters.swarm_dynos import SwarmDynos
    from waka.adapters.swarm_one_offs import SwarmOneOffDynos
    from waka.addons.provider import Provider
    from waka.addons.resources import AddonResources
    from waka.logplex.drains import DrainForwarder
    from waka.logplex.redis_logplex import RedisLogplex
    from waka.reactors.addon_manager import AddonManager
    from waka.reactors.builder import Builder
    from waka.reactors.dyno_manager import DynoManager, RouteUpdate
    from waka.router.route_store import RouteStore

log = logging.getLogger("waka")

# Seconds `heroku ps` waits for a Swarm manager's list of one-off dynos: a lost manager
# answers nothing (connecting fails only once ARP gives up), and the runtime's timeout is 60 s.
PS_MANAGER_TIMEOUT = 5.0


@dataclass
class Platform:
    settings: Settings
    ledger: Ledger
    store: ReadStore
    projector: Projector
    partners: dict[str, Provider] = field(default_factory=dict)  # third-party add-ons
    sources: SourceStore = field(init=False)
    build_logs: BuildLogs = field(init=False)
    release_logs: BuildLogs = field(init=False)  # release-phase output, one per release
    logplex: Logplex | RedisLogplex = field(init=False)  # on Redis with WAKA_REDIS_URL
    routes: RouteTable = field(init=False)

    def __post_init__(self) -> None:
        self.sources = (  # shared between processes where they share PostgreSQL
            SourceStore(self.blobs, prefix="sources/")
            if self.blobs is not None
            else SourceStore(self.settings.home / "sources")
        )
        if self.settings.database_url:  # followed from any process
            url, schema = self.settings.database_url, self.settings.database_schema
            self.build_logs = SharedBuildLogs(url, schema, "builds")  # type: ignore[assignment]
            self.release_logs = SharedBuildLogs(url, schema, "release-output")  # type: ignore[assignment]
        else:
            self.build_logs = BuildLogs(self.settings.home / "builds")
            self.release_logs = BuildLogs(self.settings.home / "release-output")
        self.logplex = open_logplex(self.settings.redis_url)
        self.routes = RouteTable()

    @cached_property
    def runtime(self) -> Runtime:
        """Docker when the engine and the stack image are there, else host processes.
        Chosen on first use, so the API and the tests that never build never ask Docker."""
        from waka.adapters.runtime import ProcessRuntime, default_runtime
        from waka.adapters.stack import STACK_IMAGE

        if self.settings.runtime == "process":
            return ProcessRuntime()
        return default_runtime(STACK_IMAGE, {"waka.platform": self.settings.platform_id})

    @cached_property
    def blobs(self) -> BlobStore | None:
        """Sources, slugs, build caches and git repositories shared by every process: in
        PostgreSQL with a database URL; None on the embedded SQLite (local directories)."""
        from waka.adapters.blobs import PostgresBlobStore

        if not self.settings.database_url:
            return None
        return PostgresBlobStore(self.settings.database_url, self.settings.database_schema)

    @cached_property
    def git_repos(self) -> GitRepos:
        """This process's copies of the apps' repositories (the copies, where shared)."""
        from waka.adapters.git_repos import GitRepos, SharedGitRepos

        root = self.settings.home / "repos"
        if self.blobs is None or self.settings.database_url is None:
            return GitRepos(root)
        return SharedGitRepos(
            root, self.blobs, self.settings.database_url, self.settings.database_schema
        )

    @cached_property
    def slugs(self) -> SlugStore:
        from waka.adapters.slugs import LocalSlugStore, SharedSlugStore

        if self.blobs is not None:  # the slugs this process uses are cached in its home
            return SharedSlugStore(
                self.blobs,
                self.settings.home / "slugs",
                cache_bytes=self.settings.slug_cache_mb * 1024**2,
            )
        return LocalSlugStore(self.settings.home / "slugs")

    @cached_property
    def build_cache(self) -> BuildCache:
        from waka.adapters.build_cache import BuildCache

        return BuildCache(self.settings.home / "cache", self.blobs)

    @cached_property
    def builder(self) -> Builder:
        from waka.reactors.builder import Builder, BuilderConfig

        home = self.settings.home
        return Builder(
            platform=self,
            runtime=self.runtime,
            slugs=self.slugs,
            sources=self.sources,
            logs=self.build_logs,
            config=BuilderConfig(
                work_root=home / "work",
                cache_root=home / "cache",
                memory_mb=self.settings.build_memory_mb,
                web_url=self.settings.web_url,
                source_ttl=self.settings.source_ttl,
            ),
            leases=self.leases,
        )

    @cached_property
    def drains(self) -> DrainForwarder:
        from waka.logplex.drains import DrainForwarder

        return DrainForwarder(self.logplex, self.store)

    @cached_property
    def dyno_manager(self) -> DynoManager:
        """Dynos in Docker containers of the stack image; as Swarm services over a Swarm's
        nodes with WAKA_RUNTIME=swarm; as host processes (no isolation) when there is no
        engine or image, or when WAKA_RUNTIME=process."""
        from waka.adapters.dynos import DockerDynos, Dynos
        from waka.adapters.process_dynos import ProcessDynos
        from waka.adapters.runtime import docker_client
        from waka.adapters.stack import STACK_IMAGE, image_exists
        from waka.reactors.dyno_manager import DynoManager

        dynos: Dynos
        client = None if self.settings.runtime in ("process", "swarm") else docker_client()
        if self.settings.runtime == "swarm":
            dynos = self.swarm_dynos
        elif client is not None and image_exists(client, STACK_IMAGE):
            dynos = DockerDynos(client, STACK_IMAGE, self.settings.platform_id)
        else:
            dynos = ProcessDynos(self.settings.home / "dynos")
        return DynoManager(
            self.store,
            self.slugs,
            dynos,
            log_line=self.emit_log,
            route=self.update_route,
            sleep_after=self.settings.sleep_after,
            states=self.dyno_states,
        )

    @cached_property
    def swarm_dynos(self) -> SwarmDynos:
        """WAKA_RUNTIME=swarm: dynos as services of the Swarm whose manager is
        WAKA_SWARM_MANAGER, from images in WAKA_SWARM_REGISTRY."""
        import docker

        from waka.adapters.release_images import ReleaseImages
        from waka.adapters.runtime import docker_client
        from waka.adapters.swarm_dynos import SwarmDynos, SwarmUnavailable

        if not self.settings.swarm_registry:
            raise SwarmUnavailable(
                "WAKA_RUNTIME=swarm needs WAKA_SWARM_REGISTRY: the registry (host:port) every "
                "Swarm node pulls dyno images from"
            )
        try:
            manager = self._swarm_manager_client(timeout=60)
        except docker.errors.DockerException as error:  # asks the engine's version at once
            raise SwarmUnavailable(
                f"WAKA_RUNTIME=swarm, but no Docker engine answers at WAKA_SWARM_MANAGER "
                f"({self.settings.swarm_manager or 'this host'}): {error}"
            ) from error
        images = ReleaseImages(manager, self.settings.swarm_registry, local=docker_client())
        return SwarmDynos(manager, images, self.settings.platform_id)

    def _swarm_manager_client(self, timeout: float, version: str | None = None) -> Any:
        """A client of the Swarm manager's engine; without a version it asks the engine's."""
        import docker

        if self.settings.swarm_manager:
            return docker.DockerClient(
                base_url=self.settings.swarm_manager, timeout=timeout, version=version
            )
        return docker.from_env(timeout=timeout, version=version)

    @cached_property
    def addons_host(self) -> str:
        """Where dynos (and users' psql) reach add-on servers: on container dynos the host's
        address on the Docker bridge, as 127.0.0.1 inside a container is the container."""
        from waka.adapters.runtime import address_towards, bridge_gateway, docker_client

        if self.settings.addons_host:
            return self.settings.addons_host
        if self.settings.runtime == "swarm":
            # Where the Swarm's nodes reach this host: towards a remote manager, or the address
            # this host's own engine advertises to the Swarm.
            return address_towards(self.settings.swarm_manager) or self.swarm_dynos.advertised
        if self.settings.runtime != "process":
            from waka.adapters.dynos import DockerDynos

            if isinstance(self.dyno_manager.dynos, DockerDynos):
                gateway = bridge_gateway(docker_client())
                if gateway:
                    return gateway
        return "127.0.0.1"

    @cached_property
    def providers(self) -> dict[str, Provider]:
        """One provider per add-on service; an unconfigured one fails provisioning with why."""
        import shutil

        from waka.adapters.addon_states import SharedAddonStates
        from waka.adapters.postgres_addons import PostgresProvider
        from waka.adapters.redis_addons import RedisProvider
        from waka.addons.catalogue import HEROKU_POSTGRESQL, HEROKU_REDIS
        from waka.addons.provider import Unavailable

        providers: dict[str, Provider] = {}
        admin_url = self.settings.addons_postgres_url or self.settings.database_url
        if admin_url:
            providers[HEROKU_POSTGRESQL.name] = PostgresProvider(admin_url, self.addons_host)
        else:
            providers[HEROKU_POSTGRESQL.name] = Unavailable(
                HEROKU_POSTGRESQL,
                "No PostgreSQL server is configured for add-ons: start waka with "
                "WAKA_ADDONS_POSTGRES_URL=postgresql://<superuser>:<password>@<host>/postgres.",
            )
        redis_server = shutil.which("redis-server")
        if redis_server:
            providers[HEROKU_REDIS.name] = RedisProvider(
                self.settings.home / "addons" / "redis",
                bind_hosts=tuple(dict.fromkeys(("127.0.0.1", self.addons_host))),
                public_host=self.addons_host,
                redis_server=redis_server,
                # Several workers: whichever leads reaches a server another one made.
                shared=SharedAddonStates(self.blobs, self.store.sealer, HEROKU_REDIS.name)
                if self.blobs is not None
                else None,
            )
        else:
            providers[HEROKU_REDIS.name] = Unavailable(
                HEROKU_REDIS, "redis-server is not installed on the waka host."
            )
        return {**providers, **self.partners}

    @cached_property
    def addon_resources(self) -> AddonResources:
        from waka.addons.resources import AddonResources

        return AddonResources(self.providers)

    @cached_property
    def addon_manager(self) -> AddonManager:
        from waka.reactors.addon_manager import AddonManager

        return AddonManager(self.ledger, self.store, self.projector, self.providers)

    @property
    def addon_manager_active(self) -> bool:
        """Is an add-on manager leading in some process (so a request may wait for it)?"""
        return self.leases.taken("addon-manager")

    @cached_property
    def leases(self) -> Leases:
        from waka.adapters.leases import LocalLeases, PostgresLeases

        if self.settings.database_url:
            return PostgresLeases(self.settings.database_url, self.settings.database_schema)
        return LocalLeases()

    @cached_property
    def notifications(self) -> LedgerNotifications:
        from waka.adapters.ledger_notifications import LedgerNotifications

        notifications = LedgerNotifications(
            self.ledger,
            database_url=self.settings.database_url,
            schema=self.settings.database_schema,
        )
        notifications.setup()
        return notifications

    @cached_property
    def route_store(self) -> RouteStore:
        from waka.router.route_store import RouteStore

        return RouteStore(self.store, self.settings.database_url, self.settings.database_schema)

    @cached_property
    def dyno_states(self) -> DynoStates:
        from waka.adapters.dyno_states import DynoStates

        return DynoStates(self.store)

    def dynos_of(self, app_id: str) -> list[dict[str, Any]]:
        """The app's dynos as the dyno manager (in whichever worker) last saw them, and its
        one-off dynos (on a Swarm with the node each runs on), as `heroku ps` shows them."""
        dynos = self.dyno_states.of(app_id)
        if self.one_offs is not None:
            dynos += self.one_offs.dynos_of(app_id)
        return dynos

    @cached_property
    def one_offs(self) -> OneOffDynos | SwarmOneOffDynos | None:
        """One-off dynos (`heroku run`) on the local engine, or as services on the Swarm with
        WAKA_RUNTIME=swarm; None without Docker or the stack image. The API process that
        starts one attaches its user to it."""
        from waka.adapters.one_off import docker_one_offs

        if self.settings.runtime == "swarm":
            from waka.adapters.swarm_one_offs import SwarmOneOffDynos

            return SwarmOneOffDynos(
                self.swarm_dynos,
                self.addons_host,  # where the Swarm's nodes reach this host
                self.settings.platform_id,
                self.emit_log,
                self.settings.instance_id,
                self.settings.run_callback_port,
                # `heroku ps` waits this long at most for the manager's list of one-offs.
                lister=self._swarm_manager_client(
                    PS_MANAGER_TIMEOUT, self.swarm_dynos.client.api.api_version
                ),
            )
        return docker_one_offs(self.settings.platform_id, self.emit_log, self.settings.instance_id)

    def emit_log(self, app_id: str, source: str, dyno: str, message: str) -> None:
        self.logplex.emit(app_id, source, dyno, message)

    def update_route(self, update: RouteUpdate) -> None:
        """The dyno manager's view of an app, for the routers: this process's table (`waka
        up`), and the shared one every router process follows."""
        if update.gone:
            self.routes.remove_app(update.app_id)
            self.route_store.remove(update.app_id)
            return
        route = Route(
            app_id=update.app_id,
            app_name=update.app_name,
            maintenance=update.maintenance,
            backends=tuple(Backend(host, port, dyno) for host, port, dyno in update.backends),
            crashed=update.crashed,
            sleeping=update.sleeping,
        )
        domains = [d["hostname"] for d in domains_of(self.store, update.app_id)]
        self.routes.set_app(route, domains)
        self.route_store.publish(route, domains)

    def reactors(self, roles: frozenset[str], extra: tuple[tuple[Any, str | None], ...] = ()):
        """The process's reactors for its roles (api, router, worker), with their leases: the
        one place that decides what runs where. `extra`: reactors the serving code made
        (the router's certificates, ACM with the router's challenges)."""
        from waka.reactors.api_log import ApiLog
        from waka.reactors.lifecycle import Reactors
        from waka.reactors.webhooks import WebhookReactor
        from waka.router.follower import RouteFollower
        from waka.router.route_store import SharedRoutes

        reactors = Reactors(self.leases, self.projector.catch_up)
        if "router" in roles:
            reactors.add(RouteFollower(self.ledger, self.routes))  # renames route at once
            if "worker" not in roles:  # the dyno manager is elsewhere: follow the shared table
                reactors.add(SharedRoutes(self.route_store, self.routes))
        if "worker" in roles:
            reactors.add(self.builder)  # every worker builds; each build under its lease
            reactors.add(self.dyno_manager, lease="dyno-manager")
            reactors.add(self.addon_manager, lease="addon-manager")
            reactors.add(ApiLog(self.ledger, self.logplex, self.store), lease="api-log")
            reactors.add(self.drains)  # every worker: Redis hands each line to one of them
            webhooks = WebhookReactor(self.ledger, self.store)
            self.dyno_manager.dyno_events = webhooks.dyno_changed  # observed, not ledger
            reactors.add(webhooks, lease="webhooks")
        for reactor, lease in extra:
            reactors.add(reactor, lease=lease)
        self.notifications.subscribe(reactors.saved)
        return reactors

    def close(self) -> None:
        self.logplex.close()  # a Redis Logplex writes the lines it still holds
        if "leases" in self.__dict__:
            self.leases.close()
        if self.__dict__.get("blobs") is not None:
            self.blobs.close()
        self.store.close()
        self.ledger.close()


def bootstrap(settings: Settings | None = None) -> Platform:
    settings = settings or Settings.from_env()
    make_private(settings.home)
    settings = cipher_key.resolve(settings)  # encrypted by default: the home's key, if not given
    with _setting_up(settings):
        ledger = Ledger(env=settings.eventsourcing_env())
        try:
            cipher_key.check(ledger, settings)
        except cipher_key.CipherKeyError:
            ledger.close()
            raise
        store: ReadStore
        sealer = Sealer(settings.cipher_key)  # the ledger's key seals the read models' secrets
        if settings.database_url:
            store = PostgresReadStore(
                settings.database_url, settings.database_schema, sealer=sealer
            )
        else:
            store = SqliteReadStore(settings.home / "projections.sqlite", sealer=sealer)
        projector = Projector(ledger, store)
        projector.setup()
        _setup_reactor_tables(ledger, store)
    projector.catch_up()
    make_private(settings.home)  # the stores' files just made
    return Platform(
        settings=settings,
        ledger=ledger,
        store=store,
        projector=projector,
        partners=load_partners(settings),
    )


def _setup_reactor_tables(ledger: Ledger, store: ReadStore) -> None:
    """The tables of the reactors that keep their own state in the store, made here, under
    the setup lock (their constructors make them too, for tests; by then they exist)."""
    from waka.reactors import api_log, webhooks

    api_log.setup(store, ledger)
    webhooks.setup(store)


@contextmanager
def _setting_up(settings: Settings) -> Iterator[None]:
    """One process at a time makes the tables: processes of several roles starting together
    on a fresh PostgreSQL schema would race in CREATE TABLE IF NOT EXISTS."""
    if not settings.database_url:
        yield
        return
    import psycopg

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        key = f"waka-setup:{settings.database_schema}"
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s::text, 0))", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s::text, 0))", (key,))


def load_partners(settings: Settings) -> dict[str, Provider]:
    """Third-party add-on services from their manifests, registered in the catalogue. A
    manifest that cannot be read is left out, saying why; the platform starts anyway."""
    from waka.adapters.partner_addons import ManifestError, load_manifest
    from waka.addons.catalogue import register

    if settings.addon_manifests is None:
        return {}
    partners: dict[str, Provider] = {}
    for path in sorted(settings.addon_manifests.glob("*.json")):
        try:
            provider = load_manifest(path, settings.home / "addons" / "partners")
            register(provider.service)
        except (ManifestError, ValueError) as error:
            log.error("add-on manifest left out: %s", error)
            continue
        partners[provider.service.name] = provider
    return partners
