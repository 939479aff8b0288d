"""The drain forwarder on the Redis Logplex: two forwarders (as two `waka worker` processes,
each with a Logplex of its own on one Redis) send each line of a third process to the app's
syslog drain exactly once; lines of an app without a drain are never read for drains."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from tests.redis_servers import RedisServer, logplex_redis  # noqa: F401
from tests.test_drains import FAST, syslog_drain, wait_for, with_drains_projection
from waka.bootstrap import Platform
from waka.domain.actors import Actor
from waka.logplex.drains import DrainForwarder
from waka.logplex.redis_logplex import RedisLogplex
from waka.logplex.redis_wire import app_key


@pytest.fixture
def logplexes(logplex_redis: RedisServer) -> Iterator[list[RedisLogplex]]:  # noqa: F811
    made = [RedisLogplex(logplex_redis.url) for _ in range(3)]
    try:
        yield made
    finally:
        for plex in made:
            plex.close(timeout=2)


def test_two_workers_forward_each_line_once(
    platform: Platform, actor: Actor, logplexes: list[RedisLogplex]
) -> None:
    with_drains_projection(platform)
    app = platform.ledger.create_app(actor, "shop")
    quiet = platform.ledger.create_app(actor, "quiet")  # no drain
    emitter, *workers = logplexes
    with syslog_drain() as server:
        platform.ledger.add_drain(actor, app.id, f"syslog://127.0.0.1:{server.port}")
        platform.projector.catch_up()
        forwarders = [DrainForwarder(w, platform.store, FAST, refresh_interval=60) for w in workers]
        for forwarder in forwarders:
            forwarder.start()
        try:
            # Both workers wait in XREADGROUP before a line is emitted. Redis hands a new entry
            # to the consumer that has waited longest, so both get lines; one joining late
            # could find them all taken (and Redis 7.0 lists a consumer only once served).
            raw = redis.Redis.from_url(emitter.url, decode_responses=True)
            wait_for(
                lambda: sum(c["cmd"] == "xreadgroup" for c in raw.client_list()) == 2,
                timeout=20,
            )
            total = 1000
            for i in range(total):
                emitter.emit(app.id, "app", "web.1", f"line {i}")
                emitter.emit(quiet.id, "app", "web.1", "not drained")
            assert emitter.flush()
            wait_for(lambda: sum(delivered(f) for f in forwarders) >= total, timeout=20)
            shares = [delivered(f) for f in forwarders]
            # Both workers were served from the group (the shares are Redis's choice).
            consumers = raw.xinfo_consumers(app_key(str(app.id)), "drains")
            assert len(consumers) == 2, consumers
        finally:
            for forwarder in forwarders:
                forwarder.stop()  # the test server reads one connection at a time
        wait_for(lambda: len(server.frames()) >= total, timeout=20)
        frames = server.frames()
    got = Counter(f.decode().rsplit(" - ", 1)[1] for f in frames)
    assert got == Counter({f"line {i}": 1 for i in range(total)})  # once each, nothing else
    assert sum(shares) == total
    assert [g["name"] for g in raw.xinfo_groups(app_key(str(app.id)))] == ["drains"]
    assert raw.xinfo_groups(app_key(str(quiet.id))) == []  # never read for drains


def delivered(forwarder: DrainForwarder) -> int:
    return sum(stats.delivered for stats in forwarder.stats().values())
