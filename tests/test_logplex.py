"""Logplex in memory: the 1,500-line buffer, time order across threads, Heroku's filters and
line format, and live feeds read on asyncio while other threads emit."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from waka.logplex import BUFFER_LINES, LogLine, Logplex
from waka.logplex.lines import MAX_LINE
from waka.logplex.syslog import frame, parse_frames

APP = "0f6c1b1e-0000-4000-8000-000000000001"
OTHER = "0f6c1b1e-0000-4000-8000-000000000002"


def messages(lines: list[LogLine]) -> list[str]:
    return [x.message for x in lines]


def test_buffer_keeps_the_last_1500_lines_per_app() -> None:
    logplex = Logplex()
    for i in range(1, 1601):
        logplex.emit(APP, "app", "web.1", f"line {i}")
    logplex.emit(OTHER, "app", "web.1", "elsewhere")

    kept = logplex.recent(APP, lines=5000)
    assert BUFFER_LINES == 1500
    assert len(kept) == 1500
    assert kept[0].message == "line 101" and kept[-1].message == "line 1600"
    assert messages(logplex.recent(APP)) == [f"line {i}" for i in range(1501, 1601)]  # 100
    assert messages(logplex.recent(APP, lines=3)) == ["line 1598", "line 1599", "line 1600"]
    assert messages(logplex.recent(OTHER)) == ["elsewhere"]
    assert logplex.recent("no-such-app") == []


def test_multi_line_messages_become_lines() -> None:
    logplex = Logplex()
    logplex.emit(APP, "app", "web.1", "Traceback:\r\n  File x\n    boom\rError\n")
    logplex.emit(APP, "app", "web.1", "")
    logplex.emit(APP, "app", "web.1", "x" * (MAX_LINE + 5))
    lines = logplex.recent(APP)
    assert messages(lines)[:5] == ["Traceback:", "  File x", "    boom", "Error", ""]
    assert messages(lines)[5:] == ["x" * MAX_LINE, "xxxxx"]
    assert len({x.at for x in lines[:4]}) == 1  # one message, one moment
    assert [x.seq for x in lines] == list(range(1, 8))


def test_line_format_is_herokus() -> None:
    logplex = Logplex()
    at = datetime(2026, 11, 26, 15, 4, 5, 123456, tzinfo=UTC)
    logplex.emit(APP, "app", "web.1", "Listening on 5000", at=at)
    logplex.emit(APP, "heroku", "router", "at=info method=GET", at=at + timedelta(seconds=1))
    # naive times are UTC; other zones are converted to it
    logplex.emit(APP, "app", "api", "naive", at=datetime(2026, 11, 26, 15, 4, 7))
    cet = timezone(timedelta(hours=1))
    logplex.emit(APP, "app", "run.4821", "zoned", at=datetime(2026, 11, 26, 16, 4, 8, tzinfo=cet))
    assert [x.format() for x in logplex.recent(APP)] == [
        "2026-11-26T15:04:05.123456+00:00 app[web.1]: Listening on 5000",
        "2026-11-26T15:04:06.123456+00:00 heroku[router]: at=info method=GET",
        "2026-11-26T15:04:07.000000+00:00 app[api]: naive",
        "2026-11-26T15:04:08.000000+00:00 app[run.4821]: zoned",
    ]


def test_emit_rejects_unknown_sources_and_empty_dynos() -> None:
    logplex = Logplex()
    with pytest.raises(ValueError, match="source"):
        logplex.emit(APP, "kernel", "web.1", "x")
    with pytest.raises(ValueError, match="dyno"):
        logplex.emit(APP, "app", "", "x")


def test_filters_by_dyno_name_process_type_and_source() -> None:
    logplex = Logplex()
    for source, dyno in [
        ("app", "web.1"),
        ("app", "web.2"),
        ("app", "web.10"),
        ("heroku", "web.1"),
        ("app", "webhook.1"),
        ("app", "worker.1"),
        ("heroku", "router"),
        ("app", "api"),
        ("app", "run.4821"),
    ]:
        logplex.emit(APP, source, dyno, f"{source}[{dyno}]")

    def pick(**filters: str) -> list[str]:
        return messages(logplex.recent(APP, lines=100, **filters))

    assert pick(dyno="web") == [
        "app[web.1]",
        "app[web.2]",
        "app[web.10]",
        "heroku[web.1]",
    ]
    assert pick(dyno="web.1") == ["app[web.1]", "heroku[web.1]"]  # not web.10
    assert pick(dyno="router") == ["heroku[router]"]
    assert pick(dyno="run") == ["app[run.4821]"]
    assert pick(source="heroku") == ["heroku[web.1]", "heroku[router]"]
    assert pick(source="app", dyno="web.1") == ["app[web.1]"]
    assert pick(dyno="web", source="app") == ["app[web.1]", "app[web.2]", "app[web.10]"]
    assert messages(logplex.recent(APP, lines=2, dyno="web")) == ["app[web.10]", "heroku[web.1]"]


def test_lines_from_many_threads_form_one_time_ordered_stream() -> None:
    logplex = Logplex()
    threads, per_thread = 6, 400
    start = threading.Barrier(threads)

    def pump(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            logplex.emit(APP, "app", f"web.{n}", str(i))

    workers = [threading.Thread(target=pump, args=(n,)) for n in range(1, threads + 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    kept = logplex.recent(APP, lines=BUFFER_LINES)
    assert len(kept) == BUFFER_LINES
    assert all(a.at <= b.at for a, b in itertools.pairwise(kept))
    assert len({x.seq for x in kept}) == BUFFER_LINES  # every line numbered once
    assert max(x.seq for x in kept) == threads * per_thread
    for n in range(1, threads + 1):  # each dyno's lines keep their own order
        own = [int(x.message) for x in kept if x.dyno == f"web.{n}"]
        assert own == sorted(own)


def test_a_late_line_is_filed_by_its_time() -> None:
    logplex = Logplex(capacity=4)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for s in (0, 2, 4):
        logplex.emit(APP, "heroku", "router", f"t{s}", at=base + timedelta(seconds=s))
    logplex.emit(APP, "app", "web.1", "t1", at=base + timedelta(seconds=1))
    assert messages(logplex.recent(APP)) == ["t0", "t1", "t2", "t4"]
    logplex.emit(APP, "app", "web.1", "t3", at=base + timedelta(seconds=3))  # full: t0 goes
    assert messages(logplex.recent(APP)) == ["t1", "t2", "t3", "t4"]
    logplex.emit(APP, "app", "web.1", "older than all", at=base)
    assert messages(logplex.recent(APP)) == ["t1", "t2", "t3", "t4"]


def test_subscribe_on_asyncio_while_threads_emit() -> None:
    logplex = Logplex()
    logplex.emit(APP, "app", "web.1", "before")
    total = 5000

    async def main() -> list[LogLine]:
        feed = logplex.subscribe(APP, backlog=1)
        others = logplex.subscribe(APP, dyno="worker")

        def pump(dyno: str) -> None:
            for i in range(total):
                logplex.emit(APP, "app", dyno, str(i))
                logplex.emit(OTHER, "app", dyno, "not this app")

        threads = [threading.Thread(target=pump, args=(d,)) for d in ("web.1", "web.2")]
        for t in threads:
            t.start()
        got = []
        async with feed:
            async for line in feed:
                got.append(line)
                if len(got) == 1 + 2 * total:
                    break
        for t in threads:
            t.join()
        with pytest.raises(TimeoutError):  # no worker lines: nothing for the filtered feed
            await asyncio.wait_for(others.batch(), 0.1)
        others.close()
        return got

    got = asyncio.run(asyncio.wait_for(main(), 30))
    assert got[0].message == "before"
    assert {x.app_id for x in got} == {APP}
    for dyno in ("web.1", "web.2"):
        assert [int(x.message) for x in got[1:] if x.dyno == dyno] == list(range(total))
    assert logplex.subscribers(APP) == 0  # both closed


def test_feed_filters_and_resumes_after_a_seq() -> None:
    logplex = Logplex()
    for dyno in ("web.1", "worker.1", "web.2", "router"):
        logplex.emit(APP, "heroku" if dyno == "router" else "app", dyno, dyno)

    async def main() -> tuple[list[str], list[str], list[str]]:
        web = logplex.subscribe(APP, dyno="web", backlog=10)
        heroku = logplex.subscribe(APP, source="heroku")
        resumed = logplex.subscribe(APP, after=2)  # an SSE client that saw lines 1 and 2
        logplex.emit(APP, "app", "web.3", "web.3")
        logplex.emit(APP, "heroku", "router", "router again")
        out = (
            messages(await web.batch()),
            messages(await heroku.batch()),
            messages(await resumed.batch()),
        )
        for feed in (web, heroku, resumed):
            feed.close()
        return out

    web, heroku, resumed = asyncio.run(main())
    assert web == ["web.1", "web.2", "web.3"]
    assert heroku == ["router again"]  # no backlog asked for
    assert resumed == ["web.2", "router", "web.3", "router again"]


def test_a_slow_reader_loses_its_oldest_lines_and_emit_never_waits() -> None:
    logplex = Logplex(queue_size=10)

    async def main() -> tuple[list[str], int]:
        feed = logplex.subscribe(APP)
        for i in range(25):
            logplex.emit(APP, "app", "web.1", str(i))
        lines = await feed.batch()
        feed.close()
        return messages(lines), feed.dropped

    lines, dropped = asyncio.run(main())
    assert lines == [str(i) for i in range(15, 25)]
    assert dropped == 15


def test_emit_is_unaffected_by_a_feed_whose_loop_has_closed() -> None:
    logplex = Logplex()

    async def leave_open() -> None:
        logplex.subscribe(APP)  # never closed, and its loop ends

    asyncio.run(leave_open())
    started = time.perf_counter()
    for i in range(20_000):  # its queue fills and drops; nothing raises or waits
        logplex.emit(APP, "app", "web.1", str(i))
    assert time.perf_counter() - started < 5
    assert len(logplex.recent(APP, lines=BUFFER_LINES)) == BUFFER_LINES


def test_closing_a_feed_unsubscribes_it() -> None:
    logplex = Logplex()

    async def main() -> list[LogLine]:
        feed = logplex.subscribe(APP)
        assert logplex.subscribers(APP) == 1
        feed.close()
        feed.close()  # idempotent
        assert logplex.subscribers(APP) == 0
        logplex.emit(APP, "app", "web.1", "after close")
        return await asyncio.wait_for(feed.batch(), 1)

    assert asyncio.run(main()) == []


def test_forget_drops_the_buffer_and_ends_live_feeds() -> None:
    logplex = Logplex()
    logplex.emit(APP, "app", "web.1", "hello")
    logplex.emit(OTHER, "app", "web.1", "kept")

    async def main() -> list[str]:
        feed = logplex.subscribe(APP)
        logplex.emit(APP, "app", "web.1", "last words")
        threading.Thread(target=logplex.forget, args=(APP,)).start()
        got = [line.message async for line in feed]  # ends by itself
        feed.close()
        return got

    assert asyncio.run(asyncio.wait_for(main(), 5)) == ["last words"]
    assert logplex.recent(APP) == []
    assert messages(logplex.recent(OTHER)) == ["kept"]


def test_listeners_see_every_line_and_a_broken_one_is_contained() -> None:
    logplex = Logplex()
    seen: list[str] = []

    def broken(line: LogLine) -> None:
        raise RuntimeError("listener bug")

    stop_broken = logplex.listen(broken)
    stop = logplex.listen(lambda line: seen.append(f"{line.app_id[-1]}:{line.message}"))
    logplex.emit(APP, "app", "web.1", "a\nb")
    logplex.emit(OTHER, "app", "web.1", "c")
    stop()
    stop_broken()
    logplex.emit(APP, "app", "web.1", "d")
    assert seen == ["1:a", "1:b", "2:c"]
    assert messages(logplex.recent(APP)) == ["a", "b", "d"]


def test_syslog_frames_are_octet_counted_rfc5424() -> None:
    at = datetime(2026, 11, 26, 15, 4, 5, 123456, tzinfo=UTC)
    line = LogLine(APP, at, "app", "web.1", "héllo wörld", 1)
    data = frame(line, "d.token") + frame(LogLine(APP, at, "heroku", "router", "at=info", 2), "h")
    first, second = parse_frames(data)
    assert (
        first == "<190>1 2026-11-26T15:04:05.123456+00:00 d.token app web.1 - héllo wörld".encode()
    )
    assert second == b"<158>1 2026-11-26T15:04:05.123456+00:00 h heroku router - at=info"
    assert data.startswith(b"%d <190>" % len(first))  # a count of bytes, not characters
