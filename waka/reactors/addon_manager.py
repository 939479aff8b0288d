"""The add-on manager: makes and removes add-ons' resources through their providers.

Level-triggered over the add-ons read model: every add-on in `provisioning` gets its resource
made and is then attached (one save: the add-on's Provisioned and the app's AddonAttached with
its release), every one in `deprovisioning` gets its resource removed. Provider calls are
idempotent, so a crash at any point is repaired by the next pass. A failing provider is
retried with back-off while retrying can help; then the add-on is marked failed, with the
reason, and never attached. Provisioned resources that stopped (a Redis process after a
reboot) are started again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from uuid import UUID

from waka.addons.catalogue import find_service
from waka.addons.provider import Provider, ProviderError
from waka.domain.addon import Addon
from waka.ledger import Ledger
from waka.projections.addons import addons_in_state, addons_to_reset
from waka.projections.projector import Projector
from waka.projections.store import ReadStore, Row
from waka.reactors.lifecycle import topics_of

log = logging.getLogger("waka.addons")

PROVISION_ATTEMPTS = 5
FIRST_RETRY = 1.0  # seconds; doubles per attempt
MAX_RETRY = 60.0
PROVISION_TIMEOUT = 60.0  # each such period a provider call hangs counts as a failed attempt
RESYNC = 30.0  # seconds between checks that provisioned resources are running


@dataclass
class _Attempts:
    count: int = 0
    next_at: float = 0.0
    last_error: str = ""


@dataclass
class AddonManager:
    ledger: Ledger
    store: ReadStore
    projector: Projector
    providers: dict[str, Provider]
    workers: int = 4
    first_retry: float = FIRST_RETRY
    provision_timeout: float = PROVISION_TIMEOUT
    wakeup: threading.Event = field(default_factory=threading.Event)
    _attempts: dict[str, _Attempts] = field(default_factory=dict)
    _running: dict[str, tuple[Future[None], float]] = field(default_factory=dict)
    _overdue: dict[str, float] = field(default_factory=dict)  # when a stuck call last counted
    _last_resync: float = 0.0
    _applied: dict[str, str] = field(default_factory=dict)  # add-on id -> plan whose limits apply
    # A reactor (waka.reactors.lifecycle), one process at a time (leased): provider calls are
    # idempotent and the add-ons' states are the ledger's, so the next leader finishes them.
    name = "addon-manager"
    interval = 1.0
    topics = topics_of(Addon)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="waka-addon")
        self._attempts_lock = threading.Lock()  # the pass and the pool's calls both count

    def close(self) -> None:
        """Wait for provider calls under way (each is bounded by its provider's timeouts)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def tick(self) -> None:
        """One reconciling pass; provider calls run on the pool, one at a time per add-on."""
        self.projector.catch_up()
        now = time.monotonic()
        self._reap(now)
        for row in addons_in_state(self.store, "provisioning"):
            self._start(row, now, self._provision)
        for row in addons_in_state(self.store, "deprovisioning"):
            self._start(row, now, self._deprovision)
        for row in addons_to_reset(self.store):
            self._start(row, now, self._reset)
        resync = not self._last_resync or now - self._last_resync >= RESYNC
        if resync:
            self._last_resync = now
        for row in addons_in_state(self.store, "provisioned"):
            # Every 30 s each resource is checked; one whose plan changed since its limits were
            # applied here (`addons:upgrade`, from any process) at once: level-triggered.
            if resync or self._applied.get(row["id"]) != row["plan"]:
                self._start(row, now, self._ensure_running)

    def settle(self, timeout: float = 30.0) -> None:
        """Run passes until no provider call is in flight or waiting for a retry (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.tick()
            if not self._running and not self._attempts:
                return
            time.sleep(0.05)

    def _start(self, row: Row, now: float, work: Callable[[Row], None]) -> None:
        addon_id = row["id"]
        attempts = self._attempts.get(addon_id)
        if addon_id in self._running or (attempts and attempts.next_at > now):
            return
        self._running[addon_id] = (self._pool.submit(work, row), now)

    def _reap(self, now: float) -> None:
        for addon_id, (future, started) in list(self._running.items()):
            if future.done():
                del self._running[addon_id]
                self._overdue.pop(addon_id, None)
                if future.exception() is not None:
                    log.error("add-on %s: %s", addon_id, future.exception())
                continue
            # A stuck call counts as a failed attempt per timeout that passes, so a hung
            # provider ends in a visible failure. It stays in flight meanwhile: a second call
            # beside it could hand out credentials the first then replaces.
            since = self._overdue.get(addon_id, started)
            if since != float("inf") and now - since > self.provision_timeout:
                self._overdue[addon_id] = now
                late = ProviderError(f"the provider did not answer in {self.provision_timeout:g} s")
                self._provider_failed(addon_id, late)

    def _provider(self, row: Row) -> Provider:
        provider = self.providers.get(row["service"])
        if provider is None or find_service(row["service"]) is None:
            raise ProviderError(f"No provider for {row['service']} here.", retryable=False)
        return provider

    def _provision(self, row: Row) -> None:
        addon_id = UUID(row["id"])
        actor = {"id": row["user_id"], "email": row["user_email"]}
        service = find_service(row["service"])
        try:
            provider = self._provider(row)
            assert service is not None
            plan = service.find_plan(row["plan"])
            if plan is None:
                raise ProviderError(f"Plan {row['plan']} is no longer offered.", retryable=False)
            config = provider.provision(row["id"], plan)
        except ProviderError as error:
            self._provider_failed(row["id"], error, actor)
            return
        except Exception as error:  # a provider's bug: retried with back-off, then failed
            log.exception("add-on %s: provider error", row["name"])
            self._provider_failed(row["id"], ProviderError(f"provider error: {error}"), actor)
            return
        self._attempts.pop(row["id"], None)
        if self.ledger.complete_provisioning(addon_id, config, actor):
            log.info("add-on %s (%s) provisioned", row["name"], row["service"])
        self.wakeup.set()  # a destroy may have overtaken it: remove what was made

    def _provider_failed(
        self, addon_id: str, error: ProviderError, actor: dict[str, str] | None = None
    ) -> None:
        count = self._back_off(addon_id, error)
        log.warning("add-on %s: attempt %d failed: %s", addon_id, count, error)
        if error.retryable and count < PROVISION_ATTEMPTS:
            return
        reason = str(error)
        if count > 1:
            reason = f"{reason} (after {count} attempts)"
        self.ledger.fail_provisioning(UUID(addon_id), reason, actor or {"id": "", "email": "waka"})
        with self._attempts_lock:
            self._attempts.pop(addon_id, None)
            if addon_id in self._overdue:
                self._overdue[addon_id] = float("inf")  # given up: count no more

    def _back_off(self, addon_id: str, error: Exception) -> int:
        """Count a failed call and hold the next one back (1, 2, 4 ... 60 s); returns the
        count of failures in a row."""
        with self._attempts_lock:
            attempts = self._attempts.setdefault(addon_id, _Attempts())
            attempts.count += 1
            attempts.last_error = str(error)
            delay = min(self.first_retry * 2 ** (attempts.count - 1), MAX_RETRY)
            attempts.next_at = time.monotonic() + delay
            return attempts.count

    def _deprovision(self, row: Row) -> None:
        """Removal is always safe to retry: it goes on (with back-off) until it succeeds."""
        try:
            self._provider(row).deprovision(row["id"])
        except Exception as error:  # ProviderError, or a provider's bug: retry with back-off
            self._back_off(row["id"], error)
            log.warning("add-on %s: removal failed, will retry: %s", row["name"], error)
            return
        self._attempts.pop(row["id"], None)
        self.ledger.finish_deprovisioning(UUID(row["id"]), {"id": "", "email": "waka"})
        log.info("add-on %s (%s) removed", row["name"], row["service"])

    def _reset(self, row: Row) -> None:
        """Empty the resource for the newest reset asked for (one reset covers all before it:
        each leaves the same empty database)."""
        reset = int(row["resets_requested"])
        try:
            self._provider(row).reset(row["id"])
        except Exception as error:  # retried with back-off while it stays requested
            self._back_off(row["id"], error)
            log.warning("add-on %s: reset failed, will retry: %s", row["name"], error)
            return
        self._attempts.pop(row["id"], None)
        actor = {"id": row["user_id"], "email": row["user_email"]}
        self.ledger.finish_reset(UUID(row["id"]), reset, actor)
        log.info("add-on %s reset", row["name"])

    def _ensure_running(self, row: Row) -> None:
        service = find_service(row["service"])
        plan = service.find_plan(row["plan"]) if service else None
        if plan is None:
            return
        addon = self.ledger.get_addon(UUID(row["id"]))
        self._applied[row["id"]] = row["plan"]  # tried: a failure is retried at the resync
        try:
            self._provider(row).ensure_running(row["id"], plan, addon.config)
        except Exception as error:
            log.warning("add-on %s is not running and could not be started: %s", row["name"], error)
