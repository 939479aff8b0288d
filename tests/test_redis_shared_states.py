"""Redis add-ons over several workers: two providers with homes of their own (two `waka worker`
processes) share the add-ons' states (a blob store, sealed with a key). Whichever leads the
add-on manager reaches the server the other made: it stops it when the add-on is removed
(its maker may be dead), applies a plan to it, and takes it over, on the same URL, when it is
gone from a worker on this host. Real redis-server processes and redis-cli."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_addon_providers import (
    REDIS_PLAN,
    make_redis,
    new_id,
    pid_alive,
    pid_of,
    redis_cli,
    redis_server,
)
from waka.adapters.addon_states import SharedAddonStates
from waka.adapters.blobs import LocalBlobStore
from waka.adapters.redis_addons import RedisProvider
from waka.addons.catalogue import HEROKU_REDIS
from waka.addons.provider import ProviderError
from waka.projections.sealing import Sealer

__all__ = ["make_redis", "redis_server"]  # fixtures, for this module's own

KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # 32 bytes of zeros, base64


@pytest.fixture
def shared(tmp_path: Path) -> SharedAddonStates:
    return SharedAddonStates(LocalBlobStore(tmp_path / "blobs"), Sealer(KEY), HEROKU_REDIS.name)


@pytest.fixture
def workers(
    make_redis: Callable[..., RedisProvider], shared: SharedAddonStates
) -> Callable[[], RedisProvider]:
    """Providers of workers with homes of their own, sharing `shared`."""
    return lambda: make_redis(shared=shared)


def test_the_shared_state_is_sealed(
    workers: Callable[[], RedisProvider], shared: SharedAddonStates
) -> None:
    addon = new_id()
    url = workers().provision(addon, REDIS_PLAN)["URL"]
    with shared.blobs.read(f"addon-states/heroku-redis/{addon}") as chunks:
        stored = b"".join(chunks).decode()
    assert "admin_password" not in stored and url.split("@")[0].split(":")[-1] not in stored
    assert shared.get(addon)["host"] == "127.0.0.1"


def test_another_worker_removes_the_server_its_maker_left(
    workers: Callable[[], RedisProvider], shared: SharedAddonStates
) -> None:
    maker, other = workers(), workers()
    addon = new_id()
    url = maker.provision(addon, REDIS_PLAN)["URL"]
    pid = pid_of(maker, addon)
    # The other worker (leading now) provisions again (a retry): the same server, not a second.
    assert other.provision(addon, REDIS_PLAN)["URL"] == url
    assert not (other.root / addon).exists()
    assert other.exists(addon)
    assert redis_cli(url, "SET", "k", "v").stdout.strip() == "OK"
    other.deprovision(addon)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), "the maker's server still runs"
    assert shared.get(addon) is None
    assert not other.exists(addon)
    other.deprovision(addon)  # again: nothing to do


def test_a_plan_reaches_the_server_another_worker_runs(
    workers: Callable[[], RedisProvider],
) -> None:
    maker, other = workers(), workers()
    addon = new_id()
    url = maker.provision(addon, REDIS_PLAN)["URL"]
    bigger = HEROKU_REDIS.find_plan("premium-0")
    assert bigger is not None
    other.ensure_running(addon, bigger, {"URL": url})
    maxclients = redis_cli(url, "CONFIG", "GET", "maxclients").stdout.split()[1]
    assert maxclients == str(bigger.limits["connections"])
    assert not (other.root / addon).exists()  # no second server


def test_a_server_gone_from_its_worker_is_taken_over_on_the_same_url(
    workers: Callable[[], RedisProvider],
) -> None:
    maker, other = workers(), workers()
    addon = new_id()
    url = maker.provision(addon, REDIS_PLAN)["URL"]
    os.kill(pid_of(maker, addon), signal.SIGKILL)
    other.ensure_running(addon, REDIS_PLAN, {"URL": url})
    assert redis_cli(url, "PING").stdout.strip() == "PONG"  # same port, same password
    assert pid_alive(pid_of(other, addon))
    other.deprovision(addon)
    assert not (other.root / addon).exists()


def test_a_server_on_a_host_that_is_away_is_a_clear_error(
    workers: Callable[[], RedisProvider], shared: SharedAddonStates
) -> None:
    maker, other = workers(), workers()
    addon = new_id()
    maker.provision(addon, REDIS_PLAN)
    away = {**shared.get(addon), "host": "192.0.2.1"}  # TEST-NET-1: no host of ours
    shared.put(addon, away)
    with pytest.raises(ProviderError, match=r"192\.0\.2\.1:\d+, which does not answer"):
        other.ensure_running(addon, REDIS_PLAN, {})
