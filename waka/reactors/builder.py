"""The builder: a reconciler that turns pending builds into slugs and releases.

Its queue is the builds read model (status pending, oldest first), so it is level-triggered:
after a crash it finds the interrupted build still pending and runs it again from the start.
Every step is idempotent: slugs are content-addressed, and finishing a build that the ledger
already finished records nothing. One build runs at a time per worker, so builds queue and
never take the machine from running dynos; several workers build different builds, each
under the build's lease, and a build whose worker died is taken over by another.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.utils import get_topic

from waka.adapters.archives import UnsafeArchive, safe_extract
from waka.adapters.build_logs import BuildLog, BuildLogs
from waka.adapters.leases import (
    Leases,
    LocalLeases,
    lease_of_work_dir,
    leased,
    work_dir_prefix,
)
from waka.adapters.runtime import LabelledRuntime, Runtime
from waka.adapters.slugs import SlugStore, SlugTooLarge
from waka.adapters.sources import SourceError, SourceStore
from waka.buildpacks import BuildError, compile_app
from waka.domain import rules
from waka.domain.actors import Actor
from waka.domain.app import App
from waka.domain.errors import DomainError, NotFound
from waka.features import metadata_env
from waka.projections.apps import find_app
from waka.projections.builds import build_by_id, pending_builds
from waka.projections.config_vars import config_of
from waka.projections.releases import find_release
from waka.projections.store import Row
from waka.reactors.release_phase import ReleasePhase

log = logging.getLogger("waka.builder")

SOURCE_LIMIT = 1024 * 1024 * 1024  # uncompressed source, bytes


@dataclass
class BuilderConfig:
    work_root: Path  # scratch space per build, removed afterwards
    cache_root: Path  # per-app build cache, kept between builds
    memory_mb: int = 2048
    release_timeout: float = 600.0
    web_url: Callable[[str], str] = lambda name: ""
    source_ttl: float = 3600.0  # seconds a source no pending build needs is kept


SWEEP_EVERY = 30.0  # seconds between looks for destroyed apps' leftovers and old sources
SETTLE_EVERY = 2.0  # seconds between looks for pushes whose hook is gone


def _children(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []


LEASE_LABEL = "waka.lease"  # on a container run under a lease: it is at work while that is held


def build_lease(build_id: str) -> str:
    return f"build:{build_id}"


class Builder:
    """A reactor (waka.reactors.lifecycle): woken by requested builds and releases."""

    name = "builder"
    interval = 0.5
    topics = frozenset(
        get_topic(kind)
        for kind in (App.BuildRequested, App.ReleaseRequested, App.Destroyed, App.Created)
    )

    def __init__(
        self,
        platform: Any,
        runtime: Runtime,
        slugs: SlugStore,
        sources: SourceStore,
        logs: BuildLogs,
        config: BuilderConfig,
        leases: Leases | None = None,
    ) -> None:
        self.platform = platform
        self.runtime = runtime
        self.slugs = slugs
        self.sources = sources
        self.logs = logs
        self.config = config
        self.leases: Leases = leases or LocalLeases()
        self._last_sweep = 0.0
        self.release_phase = ReleasePhase(
            runtime,
            slugs,
            platform.release_logs,
            work_root=config.work_root,
            memory_mb=config.memory_mb,
            timeout=config.release_timeout,
        )
        self._last_settle = 0.0
        self._started = False

    def tick(self) -> None:
        self.run_pending()

    def notice(self, topics: frozenset[str] | None) -> None:
        """An app was destroyed: its repository and cache go at the next tick."""
        if topics is None or get_topic(App.Destroyed) in topics:
            self._last_sweep = 0.0

    def run_pending(self) -> int:
        """Build everything pending that no other worker builds, oldest first; return how
        many builds ran here."""
        if not self._started:
            self.sweep_leftovers()
            self._started = True
        elif time.monotonic() - self._last_sweep >= SWEEP_EVERY:
            self.sweep_containers()  # of builds whose worker died (their lease is free)
        self.platform.projector.catch_up()
        done = 0
        for row in pending_builds(self.platform.store):
            with leased(self.leases, build_lease(row["id"])) as ours:
                if not ours:
                    continue  # another worker is building it
                self.platform.projector.catch_up()
                now = build_by_id(self.platform.store, row["id"])
                if now is None or now["status"] != "pending":
                    continue  # finished by the worker that held it a moment ago
                self.build(row)
                done += 1
        # releases of existing slugs (`releases:retry`)
        done += self.release_phase.run_pending(self.platform, self.leases, LEASE_LABEL)
        if done or time.monotonic() - self._last_settle >= SETTLE_EVERY:
            self.settle_pushes()
        if time.monotonic() - self._last_sweep >= SWEEP_EVERY:
            self.sweep_destroyed()
            self.sweep_sources()
        return done

    def sweep_leftovers(self) -> None:
        """Before the first build: what a crash mid-build left (its containers, its work
        directories) goes; not what a live worker sharing this home is using (its lease)."""
        self.sweep_containers()
        for leftover in _children(self.config.work_root):
            lease = lease_of_work_dir(leftover.name)
            if lease is None or not self.leases.taken(lease):
                shutil.rmtree(leftover, ignore_errors=True)

    def sweep_containers(self) -> int:
        """Build and release-phase containers whose lease no process holds: their worker
        died mid-run (a worker's own runs hold their leases, as do other live workers')."""
        removed = self.runtime.sweep(
            lambda labels: LEASE_LABEL in labels and self.leases.taken(labels[LEASE_LABEL])
        )
        if removed:
            log.info("removed %d build container(s) whose worker is gone", removed)
        return removed

    def settle_pushes(self) -> int:
        """Pushes whose hook is gone (the platform stopped during their build): the branch
        follows the build's release, or stays if the build failed. Level-triggered."""
        self._last_settle = time.monotonic()
        store, repos = self.platform.store, self.platform.git_repos
        settled = 0
        for push in repos.unsettled():
            build = build_by_id(store, push.build_id)
            if build is not None and build["status"] == "pending":
                continue  # still to be built (or its hook is following it)
            release = None
            if build is not None and build["status"] == "succeeded":
                release = find_release(store, push.app_id, str(build["release_version"]))
            released = release is not None and release["status"] == "succeeded"
            if repos.settle(push, released):
                log.info("push of build %s settled (released: %s)", push.build_id, released)
                settled += 1
        return settled

    def sweep_destroyed(self) -> list[str]:
        """Remove the git repository and build cache of every destroyed app (the ledger keeps
        its history); returns their ids. Level-triggered, so a crash midway is finished later."""
        self._last_sweep = time.monotonic()
        repos, caches = self.platform.git_repos, self.platform.build_cache  # here and shared
        live = {r["id"] for r in self.platform.store.query("SELECT id FROM waka_apps")}
        removed = []
        for app_id in sorted((repos.app_ids() | caches.app_ids()) - live):
            if not self._destroyed(app_id):
                continue  # not projected yet, or not an app's: leave it
            repos.remove(app_id)
            caches.clear(app_id)
            (self.config.cache_root / f"{app_id}.generation").unlink(missing_ok=True)
            removed.append(app_id)
        return removed

    def sweep_sources(self) -> list[str]:
        """Collect the source blobs no pending build needs, once an hour old (the builds that
        read them are over, or none came); -> their tokens. Level-triggered, idempotent."""
        self.platform.projector.catch_up()  # a build requested just now is seen as pending
        needed = {
            self.sources.token_of(b["source_url"]) for b in pending_builds(self.platform.store)
        }
        deleted = self.sources.collect({t for t in needed if t}, self.config.source_ttl)
        if deleted:
            log.info("collected %d source blob(s) of finished builds", len(deleted))
        return deleted

    def _destroyed(self, app_id: str) -> bool:
        try:
            return self.platform.ledger.get_app(UUID(app_id)).destroyed
        except (ValueError, NotFound):
            return False

    def cache_dir(self, app_id: str) -> Path:
        return self.config.cache_root / app_id

    def clear_cache(self, app_id: str) -> None:
        self.platform.build_cache.clear(app_id)  # and its shared copy

    def expire_cache(self, app_id: str) -> None:
        """`heroku builds:cache:purge` is a ledger event (any API process, any worker): a
        cache made before the app's last purge is removed before the build uses it."""
        try:
            generation = str(self.platform.ledger.get_app(UUID(app_id)).cache_generation)
        except (ValueError, NotFound):
            return
        marker = self.config.cache_root / f"{app_id}.generation"
        try:
            current = marker.read_text()
        except FileNotFoundError:
            current = "0"
        if current != generation:
            self.clear_cache(app_id)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(generation)

    def build(self, row: Row) -> None:
        build_id, app_id = row["id"], row["app_id"]
        actor: Actor = {"id": row["user_id"], "email": row["user_email"]}
        log.info("build %s app=%s started here", build_id, app_id)  # which worker builds it
        output = self.logs.open(build_id)
        prefix = work_dir_prefix(build_lease(build_id))
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=self._work_root()))
        ledger = self.platform.ledger
        timer = PhaseTimer()
        try:
            self.expire_cache(app_id)
            # Each container says whose it is, so one left by a crash can be swept.
            runtime = LabelledRuntime(
                self.runtime,
                {"waka.app": app_id, "waka.build": build_id, LEASE_LABEL: build_lease(build_id)},
            )
            slug, release_failure = self._build(row, output, work, timer, runtime)
            with timer("record"):
                version = ledger.finish_build(UUID(app_id), build_id, slug, release_failure, actor)
            if release_failure:
                output.error(f"Release phase failed: {release_failure}")
                output.error(f"v{version} was not released; the previous release keeps running.")
            else:
                app = find_app(self.platform.store, app_id)
                output.step("Launching...")
                output.detail(f"Released v{version}")
                if app:
                    output.detail(f"{self.config.web_url(app['name'])} deployed to waka")
        except (BuildError, UnsafeArchive, SlugTooLarge, SourceError, DomainError) as error:
            message = getattr(error, "message", None) or str(error)
            output.error(message)
            output.error("Push rejected, failed to compile app.")
            ledger.fail_build(UUID(app_id), build_id, message, actor)
        except Exception:
            log.exception("build %s crashed", build_id)
            output.error("Internal error while building; the operator's log has the details.")
            ledger.fail_build(UUID(app_id), build_id, "Internal error while building.", actor)
        finally:
            output.close()
            shutil.rmtree(work, ignore_errors=True)
            self.platform.projector.catch_up()
            # Where the time went, for operators and bench/push_time.py.
            log.info("build %s app=%s %s", build_id, app_id, timer.summary())

    def _build(
        self, row: Row, output: BuildLog, work: Path, timer: PhaseTimer, runtime: Runtime
    ) -> tuple[dict[str, Any], str | None]:
        app_id = row["app_id"]
        output.step(f"Building on the {rules.DEFAULT_STACK} stack")
        with timer("source"):
            source = work / "source.tgz"
            self.sources.fetch(row["source_url"], source)
            app_dir = work / "app"
            app_dir.mkdir()
            safe_extract(source, app_dir, max_bytes=SOURCE_LIMIT)
            _hoist_single_directory(app_dir)
        config = config_of(self.platform.store, app_id)
        with timer("cache"):
            self.platform.build_cache.restore(app_id)  # from shared storage, if behind
        with timer("compile"):
            result = compile_app(
                build_dir=app_dir,
                cache_dir=self.cache_dir(app_id),
                config=config,
                buildpacks=orjson.loads(row["buildpacks"]),
                runtime=runtime,
                output=output.line,
                source_version=row["source_version"],
                work_dir=work,
                memory_mb=self.config.memory_mb,
            )
        with timer("cache"):
            self.platform.build_cache.save(app_id)  # for the next build, on any worker
        output.step("Compressing...")
        with timer("slug"):
            slug = self.slugs.create(app_dir)
        output.detail(f"Done: {_megabytes(slug.size)}")
        slug_record = {
            "id": slug.id,
            "checksum": slug.checksum,
            "size": slug.size,
            "process_types": result.process_types,
            "buildpack_description": result.description,
            "stack": rules.DEFAULT_STACK,
            "commit": row["source_version"],
        }
        release_failure = None
        if "release" in result.process_types:
            # The release takes its version now (pending), so it and its output can be
            # followed while the release phase runs (`heroku releases:output`).
            actor: Actor = {"id": row["user_id"], "email": row["user_email"]}
            pending = self.platform.ledger.request_release_phase(
                UUID(app_id), row["id"], slug_record, actor
            )
            self.platform.projector.catch_up()
            with timer("release_phase"):
                release_failure = self.release_phase.run(
                    result.process_types["release"],
                    slug.id,
                    {**config, **metadata_env(self.platform.store, app_id, pending["version"])},
                    pending["output_id"],
                    output,
                    runtime,
                    build_lease(row["id"]),
                )
        return slug_record, release_failure

    def _work_root(self) -> Path:
        self.config.work_root.mkdir(parents=True, exist_ok=True)
        return self.config.work_root


class PhaseTimer:
    """Wall time per build phase."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.phases: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.monotonic() - start

    def summary(self) -> str:
        parts = [f"{name}={seconds:.3f}s" for name, seconds in self.phases.items()]
        return " ".join([*parts, f"total={time.monotonic() - self.started:.3f}s"])


def _hoist_single_directory(app_dir: Path) -> None:
    """A tarball whose files all sit in one top-level directory (GitHub's archives do) is
    built from inside that directory, as Heroku does."""
    entries = list(app_dir.iterdir())
    if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
        return
    top = entries[0].rename(app_dir / f".waka-top-{entries[0].name}")
    for child in list(top.iterdir()):
        child.rename(app_dir / child.name)
    top.rmdir()


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}M"
