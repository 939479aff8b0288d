"""Failed authentication is rate-limited per client address: the limiter alone (a fake clock),
then the API and git smart HTTP in-process, on both backends."""

from __future__ import annotations

import base64
import logging
import threading

import pytest
from starlette.testclient import TestClient

from tests.test_api import ACCEPT, error_of
from waka.api.app import create_api
from waka.api.auth_limit import AuthLimiter, RateLimited, limiter_of
from waka.bootstrap import Platform


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def exhaust(limiter: AuthLimiter, address: str, times: int) -> None:
    for _ in range(times):
        limiter.check(address)
        limiter.failed(address)


# --- the limiter -----------------------------------------------------------------------------


def test_a_burst_of_failures_then_one_try_per_refill() -> None:
    clock = Clock()
    limiter = AuthLimiter(3, clock)
    exhaust(limiter, "10.0.0.1", 3)
    with pytest.raises(RateLimited) as blocked:
        limiter.check("10.0.0.1")
    assert blocked.value.status == 429 and blocked.value.error_id == "rate_limit"
    assert blocked.value.retry_after == 20  # 3 a minute: one back every 20 s
    limiter.check("10.0.0.2")  # another address is not affected
    clock.now += 19.5
    with pytest.raises(RateLimited) as still:
        limiter.check("10.0.0.1")
    assert still.value.retry_after == 1
    clock.now += 0.5
    exhaust(limiter, "10.0.0.1", 1)  # one more try, and no more
    with pytest.raises(RateLimited):
        limiter.check("10.0.0.1")
    clock.now += 60  # a minute later the whole burst is back
    exhaust(limiter, "10.0.0.1", 3)


def test_checks_alone_never_count() -> None:
    """What a successful sign-in does: check, and nothing more."""
    limiter = AuthLimiter(2, Clock())
    for _ in range(1000):
        limiter.check("10.0.0.1")
    exhaust(limiter, "10.0.0.1", 2)


def test_ipv6_counts_per_64_and_ipv4_mapped_as_ipv4() -> None:
    limiter = AuthLimiter(2, Clock())
    exhaust(limiter, "2001:db8:1:2::1", 1)
    exhaust(limiter, "2001:db8:1:2:ffff::9", 1)  # same /64
    with pytest.raises(RateLimited):
        limiter.check("2001:db8:1:2::77")
    limiter.check("2001:db8:1:3::1")  # the next /64
    exhaust(limiter, "::ffff:192.0.2.7", 2)
    with pytest.raises(RateLimited):
        limiter.check("192.0.2.7")


def test_failures_from_many_threads_are_all_counted() -> None:
    limiter = AuthLimiter(400, Clock())

    def fail() -> None:
        for _ in range(50):
            limiter.failed("10.0.0.1")

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pytest.raises(RateLimited):
        limiter.check("10.0.0.1")  # 400 failures exactly: none lost to a race


def test_memory_is_bounded_full_buckets_forgotten_first() -> None:
    clock = Clock()
    limiter = AuthLimiter(2, clock, max_addresses=100)
    exhaust(limiter, "10.9.9.9", 2)  # blocked, and must stay so
    clock.now += 1
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= 100
    with pytest.raises(RateLimited):  # flooding from other addresses does not free it
        limiter.check("10.9.9.9")
    clock.now += 60  # everyone's bucket is full again: the next prune forgets them all
    limiter.failed("10.8.8.8")
    for i in range(200):
        limiter.failed(f"10.1.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= 100


def test_settings(caplog: pytest.LogCaptureFixture) -> None:
    assert AuthLimiter.from_env({}).capacity == 20
    assert AuthLimiter.from_env({"WAKA_AUTH_FAILURES_PER_MINUTE": "5"}).capacity == 5
    off = AuthLimiter.from_env({"WAKA_AUTH_FAILURES_PER_MINUTE": "0"})
    for _ in range(100):
        off.failed("10.0.0.1")
    off.check("10.0.0.1")
    with caplog.at_level(logging.WARNING, logger="waka.api"):
        assert AuthLimiter.from_env({"WAKA_AUTH_FAILURES_PER_MINUTE": "lots"}).capacity == 20
    assert "WAKA_AUTH_FAILURES_PER_MINUTE" in caplog.text


# --- the API and git, in-process ---------------------------------------------------------------


@pytest.fixture
def clock(platform: Platform) -> Clock:
    """The platform's limiter: 3 failures a minute, on a clock the test moves."""
    clock = Clock()
    platform.auth_limiter = AuthLimiter(3, clock)  # type: ignore[attr-defined]
    assert limiter_of(platform) is platform.auth_limiter  # type: ignore[attr-defined]
    return clock


def client_at(platform: Platform, address: str) -> TestClient:
    return TestClient(create_api(platform), raise_server_exceptions=False, client=(address, 4242))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Accept": ACCEPT}


def test_wrong_keys_get_429_with_retry_after_in_herokus_shape(
    platform: Platform, clock: Clock
) -> None:
    _, key = platform.ledger.register_user("owner@example.com")
    platform.projector.catch_up()
    guesser = client_at(platform, "203.0.113.5")
    for _ in range(3):
        assert error_of(guesser.get("/apps", headers=bearer("guess")))[0] == 401
    blocked = guesser.get("/apps", headers=bearer("guess"))
    status, error_id, message = error_of(blocked)
    assert (status, error_id) == (429, "rate_limit")
    assert blocked.headers["Retry-After"] == "20" and "20 seconds" in message
    # While blocked, a right key is not even looked at (else a right guess would show).
    assert guesser.get("/apps", headers=bearer(key)).status_code == 429
    # Others are not slowed down.
    assert client_at(platform, "203.0.113.6").get("/apps", headers=bearer(key)).status_code == 200
    clock.now += 20
    assert guesser.get("/apps", headers=bearer(key)).status_code == 200


def test_requests_without_a_key_and_successes_never_count(platform: Platform, clock: Clock) -> None:
    _, key = platform.ledger.register_user("owner@example.com")
    platform.projector.catch_up()
    user = client_at(platform, "198.51.100.1")
    for _ in range(30):
        assert user.get("/apps", headers={"Accept": ACCEPT}).status_code == 401  # no key
        assert user.get("/apps", headers=bearer(key)).status_code == 200
    for _ in range(3):  # typos still have their whole burst
        assert user.get("/apps", headers=bearer("typo")).status_code == 401
    assert user.get("/apps", headers=bearer(key)).status_code == 429


def test_git_passwords_count_against_the_same_address(platform: Platform, clock: Clock) -> None:
    _, key = platform.ledger.register_user("owner@example.com")
    platform.projector.catch_up()
    client = client_at(platform, "192.0.2.44")
    assert client.post("/apps", json={"name": "shop"}, headers=bearer(key)).status_code == 201
    refs = "/shop.git/info/refs?service=git-receive-pack"

    def basic(password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"x:{password}".encode()).decode()}

    assert client.get(refs, headers=basic(key)).status_code == 200
    for _ in range(2):
        assert client.get(refs, headers=basic("guess")).status_code == 401
    assert client.get("/apps", headers=bearer("guess")).status_code == 401  # API: the third
    refused = client.get(refs, headers=basic(key))
    status, error_id, _ = error_of(refused)
    assert (status, error_id) == (429, "rate_limit")
    assert int(refused.headers["Retry-After"]) >= 1
    assert client.get("/apps", headers=bearer(key)).status_code == 429
