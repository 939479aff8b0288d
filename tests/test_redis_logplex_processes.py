"""Logplex on Redis across real OS processes: a line emitted by one process reaches a `--tail`
feed in another within a second, and the last 1,500 lines outlive the emitter's kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.redis_servers import RedisServer, logplex_redis  # noqa: F401
from waka.logplex import BUFFER_LINES
from waka.logplex.redis_logplex import RedisLogplex

REPO = Path(__file__).resolve().parents[1]
APP = "0f6c1b1e-0000-4000-8000-0000000000aa"

# Emits `count` lines, then one timestamped line per line of stdin it reads; prints "flushed"
# once every line so far is in Redis.
EMITTER = """
import sys, time
from waka.logplex.redis_logplex import RedisLogplex
url, app, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
plex = RedisLogplex(url)
for i in range(1, count + 1):
    plex.emit(app, "app", "web.1", f"line {i}")
assert plex.flush(30)
print("flushed", flush=True)
for word in sys.stdin:
    plex.emit(app, "app", "worker.1", f"{word.strip()} {time.time()!r}")
    plex.flush(5)
    print("flushed", flush=True)
"""

READER = """
import json, sys
from waka.logplex.redis_logplex import RedisLogplex
plex = RedisLogplex(sys.argv[1])
print(json.dumps([x.message for x in plex.recent(sys.argv[2], lines=int(sys.argv[3]))]))
"""


def python(script: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_line_from_another_process_reaches_a_feed_within_a_second(
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    tail = RedisLogplex(logplex_redis.url)  # the API process's side
    emitter = python(EMITTER, logplex_redis.url, APP, "3", stdin=subprocess.PIPE)
    assert emitter.stdin is not None and emitter.stdout is not None
    assert emitter.stdout.readline().strip() == "flushed"

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        feed = await asyncio.to_thread(tail.subscribe, APP, backlog=3, loop=loop)
        backlog = [x.message for x in await asyncio.wait_for(feed.batch(), 5)]
        assert backlog == ["line 1", "line 2", "line 3"]
        delays = []
        for n in range(5):
            emitter.stdin.write(f"ping-{n}\n")  # type: ignore[union-attr]
            emitter.stdin.flush()  # type: ignore[union-attr]
            lines = await asyncio.wait_for(feed.batch(), 2)
            received = time.time()
            (line,) = lines
            word, sent = line.message.split()
            assert (word, line.dyno) == (f"ping-{n}", "worker.1")
            delays.append(received - float(sent))
        feed.close()
        return delays

    try:
        delays = asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        emitter.stdin.close()
        emitter.wait(10)
        tail.close()
    assert max(delays) < 1.0, delays


def test_the_last_1500_lines_outlive_a_killed_emitter(
    logplex_redis: RedisServer,  # noqa: F811
) -> None:
    emitter = python(EMITTER, logplex_redis.url, APP, "1600", stdin=subprocess.PIPE)
    assert emitter.stdout is not None
    assert emitter.stdout.readline().strip() == "flushed"
    emitter.send_signal(signal.SIGKILL)  # a crash: nothing of it gets to clean up
    emitter.wait(10)

    restarted = python(EMITTER, logplex_redis.url, APP, "0", stdin=subprocess.PIPE)
    assert restarted.stdin is not None and restarted.stdout is not None
    assert restarted.stdout.readline().strip() == "flushed"
    restarted.stdin.write("after-restart\n")
    restarted.stdin.flush()
    assert restarted.stdout.readline().strip() == "flushed"
    restarted.stdin.close()
    assert restarted.wait(10) == 0

    reader = python(READER, logplex_redis.url, APP, str(BUFFER_LINES))  # a third process
    out, _ = reader.communicate(timeout=30)
    kept = json.loads(out)
    assert len(kept) == BUFFER_LINES
    assert kept[0] == "line 102" and kept[-2] == "line 1600"
    assert kept[-1].startswith("after-restart ")
