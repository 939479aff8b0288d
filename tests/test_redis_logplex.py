"""Logplex on a real redis-server: the 1,500-line buffer as a capped stream, Heroku's filters,
live feeds read on asyncio, forget, arrival order across emitters, drains read once by
several listeners, and Redis going away and coming back (emit never raises nor waits)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from tests.redis_servers import RedisServer, logplex_redis  # noqa: F401
from waka.logplex import BUFFER_LINES, LogLine, LogplexUnavailable
from waka.logplex.redis_logplex import RedisLogplex
from waka.logplex.redis_wire import app_key

APP = "0f6c1b1e-0000-4000-8000-000000000001"
OTHER = "0f6c1b1e-0000-4000-8000-000000000002"


def messages(lines: list[LogLine]) -> list[str]:
    return [x.message for x in lines]


@pytest.fixture
def logplex(logplex_redis: RedisServer) -> Iterator[RedisLogplex]:  # noqa: F811
    plex = RedisLogplex(logplex_redis.url)
    try:
        yield plex
    finally:
        plex.close(timeout=2)


def wait_until(check, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_the_stream_keeps_exactly_the_last_1500_lines(
    logplex: RedisLogplex,
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    for i in range(1, 1601):
        logplex.emit(APP, "app", "web.1", f"line {i}")
    logplex.emit(OTHER, "app", "web.1", "elsewhere")
    assert logplex.flush()

    raw = redis.Redis.from_url(logplex_redis.url)
    assert raw.xlen(app_key(APP)) == BUFFER_LINES  # exact trim, not approximate
    assert 0 < raw.ttl(app_key(APP)) <= 7 * 24 * 3600  # Heroku: lines expire after a week
    kept = logplex.recent(APP, lines=5000)
    assert len(kept) == BUFFER_LINES
    assert kept[0].message == "line 101" and kept[-1].message == "line 1600"
    assert messages(logplex.recent(APP)) == [f"line {i}" for i in range(1501, 1601)]
    assert messages(logplex.recent(APP, lines=2)) == ["line 1599", "line 1600"]
    assert messages(logplex.recent(OTHER)) == ["elsewhere"]
    assert logplex.recent("no-such-app") == []
    assert [x.seq for x in kept] == sorted({x.seq for x in kept})  # increasing, unique


def test_lines_keep_herokus_format_filters_and_splitting(logplex: RedisLogplex) -> None:
    from datetime import UTC, datetime, timedelta

    at = datetime(2026, 11, 26, 15, 4, 5, 123456, tzinfo=UTC)
    logplex.emit(APP, "app", "web.1", "Listening on 5000", at=at)
    logplex.emit(APP, "heroku", "router", "at=info\tmethod=GET", at=at + timedelta(seconds=1))
    logplex.emit(APP, "app", "web.10", "Traceback:\n  File x\n")
    logplex.emit(APP, "app", "worker.1", "")
    logplex.flush()
    lines = logplex.recent(APP)
    assert [x.format() for x in lines[:2]] == [
        "2026-11-26T15:04:05.123456+00:00 app[web.1]: Listening on 5000",
        "2026-11-26T15:04:06.123456+00:00 heroku[router]: at=info\tmethod=GET",
    ]
    assert messages(lines[2:]) == ["Traceback:", "  File x", ""]
    assert messages(logplex.recent(APP, dyno="web")) == [
        "Listening on 5000",
        "Traceback:",
        "  File x",
    ]
    assert messages(logplex.recent(APP, dyno="web.1")) == ["Listening on 5000"]  # not web.10
    assert messages(logplex.recent(APP, source="heroku")) == ["at=info\tmethod=GET"]
    assert messages(logplex.recent(APP, lines=1, source="app", dyno="web")) == ["  File x"]
    with pytest.raises(ValueError, match="source"):
        logplex.emit(APP, "kernel", "web.1", "x")
    with pytest.raises(ValueError, match="dyno"):
        logplex.emit(APP, "app", "", "x")


def test_lines_from_many_emitters_are_kept_in_arrival_order(
    logplex: RedisLogplex,
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    """Two Logplexes (as two processes would) and several threads each: every line once, in
    the order Redis got them; each dyno's own lines in the order it emitted them."""
    second = RedisLogplex(logplex_redis.url)
    per_thread = 200
    start = threading.Barrier(4)

    def pump(plex: RedisLogplex, dyno: str) -> None:
        start.wait()
        for i in range(per_thread):
            plex.emit(APP, "app", dyno, str(i))

    threads = [
        threading.Thread(target=pump, args=(plex, f"web.{n}"))
        for n, plex in enumerate((logplex, logplex, second, second), start=1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert logplex.flush() and second.flush()
    second.close()
    kept = logplex.recent(APP, lines=BUFFER_LINES)
    assert len(kept) == 4 * per_thread
    assert [x.seq for x in kept] == sorted(x.seq for x in kept)
    for n in range(1, 5):
        assert [int(x.message) for x in kept if x.dyno == f"web.{n}"] == list(range(per_thread))


def test_feeds_get_their_backlog_then_new_lines_and_resume_after_a_seq(
    logplex: RedisLogplex,
) -> None:
    for dyno in ("web.1", "worker.1", "web.2", "router"):
        logplex.emit(APP, "heroku" if dyno == "router" else "app", dyno, dyno)
    logplex.flush()
    seen = logplex.recent(APP)
    second_seq = seen[1].seq

    async def main() -> tuple[list[str], list[str], list[str], list[str]]:
        loop = asyncio.get_running_loop()
        web = await asyncio.to_thread(logplex.subscribe, APP, dyno="web", backlog=10, loop=loop)
        heroku = await asyncio.to_thread(logplex.subscribe, APP, source="heroku", loop=loop)
        resumed = await asyncio.to_thread(logplex.subscribe, APP, after=second_seq, loop=loop)
        last = await asyncio.to_thread(logplex.subscribe, APP, backlog=1, loop=loop)
        backlogs = messages(await asyncio.wait_for(web.batch(), 2))
        assert backlogs == ["web.1", "web.2"]
        assert messages(await asyncio.wait_for(last.batch(), 2)) == ["router"]
        assert logplex.subscribers(APP) == 4
        logplex.emit(APP, "app", "web.3", "web.3")
        logplex.emit(APP, "heroku", "router", "router again")
        logplex.emit(OTHER, "app", "web.1", "not this app")

        async def take(feed, count: int) -> list[str]:  # type: ignore[no-untyped-def]
            got: list[str] = []
            while len(got) < count:
                got += messages(await asyncio.wait_for(feed.batch(), 2))
            return got

        out = (
            await take(web, 1),
            await take(heroku, 1),
            await take(resumed, 4),
            await take(last, 2),
        )
        for feed in (web, heroku, resumed, last):
            feed.close()
        assert logplex.subscribers(APP) == 0
        return out

    web, heroku, resumed, last = asyncio.run(asyncio.wait_for(main(), 20))
    assert web == ["web.3"]
    assert heroku == ["router again"]  # no backlog asked for
    assert resumed == ["web.2", "router", "web.3", "router again"]
    assert last == ["web.3", "router again"]


def test_a_line_reaches_a_feed_within_a_second(logplex: RedisLogplex) -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        feed = await asyncio.to_thread(logplex.subscribe, APP, loop=loop)
        await asyncio.sleep(0.3)  # the reader follows the stream now
        delays = []
        for i in range(20):
            sent = time.perf_counter()
            logplex.emit(APP, "app", "web.1", f"ping {i}")
            assert messages(await asyncio.wait_for(feed.batch(), 1)) == [f"ping {i}"]
            delays.append(time.perf_counter() - sent)
        feed.close()
        return delays

    delays = asyncio.run(main())
    assert max(delays) < 1.0
    assert sorted(delays)[len(delays) // 2] < 0.1  # typically a few milliseconds


def test_forget_deletes_the_stream_and_ends_live_feeds(
    logplex: RedisLogplex,
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    logplex.emit(APP, "app", "web.1", "hello")
    logplex.emit(OTHER, "app", "web.1", "kept")
    logplex.flush()
    elsewhere = RedisLogplex(logplex_redis.url)  # another process's feed ends too

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        feed = await asyncio.to_thread(elsewhere.subscribe, APP, loop=loop)
        await asyncio.sleep(0.3)
        logplex.emit(APP, "app", "web.1", "last words")
        logplex.forget(APP)
        got = []
        async for line in feed:  # ends by itself
            got.append(line.message)
        feed.close()
        return got

    try:
        assert asyncio.run(asyncio.wait_for(main(), 10)) == ["last words"]
    finally:
        elsewhere.close()
    logplex.flush()
    assert not redis.Redis.from_url(logplex_redis.url).exists(app_key(APP))
    assert logplex.recent(APP) == []
    assert messages(logplex.recent(OTHER)) == ["kept"]


def test_drain_listeners_in_several_processes_get_each_line_once(
    logplex: RedisLogplex,
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    workers = [RedisLogplex(logplex_redis.url) for _ in range(2)]
    got: list[Counter[str]] = [Counter(), Counter()]
    lock = threading.Lock()

    def listener(n: int):  # type: ignore[no-untyped-def]
        def take(line: LogLine) -> None:
            with lock:
                got[n][f"{line.app_id[-1]}:{line.message}"] += 1

        return take

    for n, worker in enumerate(workers):
        worker.listen(listener(n), apps=lambda: (APP,))
    time.sleep(1.5)  # both have joined the group
    total = 2000
    try:
        for i in range(total):
            logplex.emit(APP, "app", "web.1", str(i))
            logplex.emit(OTHER, "app", "web.1", "no drain")
        logplex.flush()
        wait_until(lambda: sum(sum(c.values()) for c in got) >= total, 10)
        time.sleep(0.5)  # nothing more arrives
    finally:
        for worker in workers:
            worker.close()
    both = got[0] + got[1]
    assert both == Counter({f"1:{i}": 1 for i in range(total)})  # each once; OTHER not read
    assert got[0] and got[1]  # shared between the two


def test_listen_needs_the_apps_to_follow(logplex: RedisLogplex) -> None:
    with pytest.raises(ValueError, match="apps"):
        logplex.listen(lambda line: None)


def test_redis_down_drops_lines_without_raising_and_recovers(
    logplex: RedisLogplex,
    logplex_redis: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    logplex.emit(APP, "app", "web.1", "before")
    logplex.flush()

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        feed = await asyncio.to_thread(logplex.subscribe, APP, loop=loop)
        await asyncio.sleep(0.3)
        logplex_redis.stop()
        started = time.perf_counter()
        for i in range(5000):  # the router and the pumps go on as if nothing happened
            logplex.emit(APP, "heroku", "router", f"lost {i}")
        assert time.perf_counter() - started < 1.0
        assert await asyncio.to_thread(wait_until, lambda: logplex.dropped >= 5000)
        with pytest.raises(LogplexUnavailable, match="Redis"):
            logplex.recent(APP)
        with pytest.raises(LogplexUnavailable):
            logplex.check()
        logplex_redis.start()  # back, on the same port (empty: it kept no data)
        await asyncio.to_thread(wait_until, lambda: _emitted(logplex, "after"), 10)
        got = messages(await asyncio.wait_for(feed.batch(), 5))  # the feed goes on
        feed.close()
        return got

    with caplog.at_level(logging.WARNING, logger="waka.logplex"):
        got = asyncio.run(asyncio.wait_for(main(), 30))
    assert "after" in got and not any(x.startswith("lost") for x in got)
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert 1 <= len(unreachable) <= 2  # once a minute, not once a line or batch
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert "after" in messages(logplex.recent(APP))


def _emitted(logplex: RedisLogplex, message: str) -> bool:
    logplex.emit(APP, "app", "web.1", message)
    logplex.flush(1)
    try:
        return message in messages(logplex.recent(APP))
    except LogplexUnavailable:
        return False


def test_a_password_in_the_url_is_never_logged(
    logplex_redis: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    plex = RedisLogplex(f"redis://:s3cret-pw@127.0.0.1:{logplex_redis.port}/0")
    logplex_redis.stop()
    with caplog.at_level(logging.INFO, logger="waka.logplex"):
        plex.emit(APP, "app", "web.1", "x")
        wait_until(lambda: plex.dropped >= 1)
        plex.close(timeout=1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "unreachable" in text and "127.0.0.1" in text
    assert "s3cret-pw" not in text


def test_a_url_that_is_not_redis_is_refused_without_repeating_it() -> None:
    with pytest.raises(ValueError, match="WAKA_REDIS_URL must be a redis://") as refused:
        RedisLogplex("http://user:s3cret@example.com/")
    assert "s3cret" not in str(refused.value)


def test_settings_read_waka_redis_url_and_choose_the_logplex() -> None:
    from waka.config import Settings
    from waka.logplex import Logplex, open_logplex

    assert Settings.from_env({"WAKA_HOME": "/tmp/x"}).redis_url is None
    settings = Settings.from_env({"WAKA_HOME": "/tmp/x", "WAKA_REDIS_URL": "redis://h:6380/2"})
    assert settings.redis_url == "redis://h:6380/2"
    assert isinstance(open_logplex(None), Logplex)
    chosen = open_logplex(settings.redis_url)
    assert isinstance(chosen, RedisLogplex)
    chosen.close(timeout=0.1)  # never connected: nothing to flush


def test_close_does_not_wait_for_a_redis_that_is_down(
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    plex = RedisLogplex(logplex_redis.url)
    logplex_redis.stop()
    for i in range(50_000):
        plex.emit(APP, "app", "web.1", str(i))
    wait_until(lambda: plex.dropped > 0)
    started = time.perf_counter()
    plex.close(timeout=5)
    assert time.perf_counter() - started < 2.0
    assert plex.dropped == 50_000 and plex.written == 0
