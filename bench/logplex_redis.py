"""Logplex on Redis: what emit() costs the emitting process, how many lines per second one
process gets into Redis, and how long a line takes from emit() in one process to a `--tail`
feed in another.

A redis-server of its own (temporary directory, free loopback port, no persistence) is started
and stopped by the script. Cases, 100-byte lines to one app:

- emit flat out, one thread, in bursts of 50,000 lines: emit() calls per second (the caller's
  side: only queueing), lines per second until all are in Redis (the writer thread's
  pipelined batches), the CPU per line of the emitting process (both threads) and of
  redis-server, against the in-memory Logplex's.
- paced at PACE lines/s for a few seconds (a very busy app): lines dropped (none expected).
- latency: a child process follows the app with subscribe() (as an API process serving
  `heroku logs --tail` does); the parent emits one stamped line every 10 ms, the child
  records when each arrived: p50, p99, max. Once with nothing else going on, once while the
  parent also emits PACE lines/s.

    python bench/logplex_redis.py            # 200,000 lines flat out (~30 s)
    python bench/logplex_redis.py --quick    # 20,000 lines: checks the script works
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

import report  # noqa: E402
from machine import CpuWatch, describe  # noqa: E402

from tests.redis_servers import RedisServer  # noqa: E402
from waka.logplex import Logplex  # noqa: E402
from waka.logplex.redis_logplex import RedisLogplex  # noqa: E402

APP = "0f6c1b1e-0000-4000-8000-00000000be7c"
ROUTER_LINE = "at=info method=GET path=/ host=shop.localhost fwd=127.0.0.1 status=200 bytes=512"
MESSAGE = ROUTER_LINE.ljust(100, ".")
PACE = 10_000  # lines per second of the paced cases
BURST = 50_000

# The API process's side: follows the app, prints each stamped line's delay once it has
# `count` of them (lines without a stamp, the background load, are only counted).
FOLLOWER = """
import asyncio, json, sys, time
from waka.logplex.redis_logplex import RedisLogplex
url, app, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
plex = RedisLogplex(url)
async def main():
    feed = await asyncio.to_thread(plex.subscribe, app, loop=asyncio.get_running_loop())
    print("following", flush=True)
    delays, other = [], 0
    while len(delays) < count:
        for line in await feed.batch():
            now = time.time()
            if line.message.startswith("stamp "):
                delays.append(now - float(line.message.split()[1]))
            else:
                other += 1
    print(json.dumps({"delays": delays, "other": other}), flush=True)
asyncio.run(main())
"""


def flat_out(plex: Logplex | RedisLogplex, lines: int) -> dict[str, float]:
    """In bursts of BURST lines, each written before the next: emit() outruns the writer, and
    a burst larger than the queue (100,000 lines) would be partly dropped, by design."""
    cpu0, start, queued = time.process_time(), time.perf_counter(), 0.0
    for offset in range(0, lines, BURST):
        burst = time.perf_counter()
        for _ in range(min(BURST, lines - offset)):
            plex.emit(APP, "heroku", "router", MESSAGE)
        queued += time.perf_counter() - burst
        if isinstance(plex, RedisLogplex):
            assert plex.flush(120)
    done = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return {
        "emit_per_s": lines / queued,
        "stored_per_s": lines / done,
        "cpu_us": cpu / lines * 1e6,
        "dropped": float(getattr(plex, "dropped", 0)),
    }


def redis_cpu_seconds(plex: RedisLogplex) -> float:
    info = plex._redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def paced(plex: RedisLogplex, seconds: float, stop: threading.Event | None = None) -> int:
    """Emit PACE lines/s (in 10 ms slices) for `seconds` or until `stop`; lines emitted."""
    sent, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and not (stop and stop.is_set()):
        due = int((time.perf_counter() - start) * PACE)
        for _ in range(due - sent):
            plex.emit(APP, "heroku", "router", MESSAGE)
        sent = max(sent, due)
        time.sleep(0.01)
    return sent


def latency(url: str, plex: RedisLogplex, stamps: int, load: bool) -> dict[str, float]:
    follower = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, url, APP, str(stamps)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    assert follower.stdout.readline().strip() == "following"
    time.sleep(0.5)  # its reader thread follows the stream now
    stop = threading.Event()
    background = threading.Thread(target=paced, args=(plex, 3600, stop)) if load else None
    if background:
        background.start()
    for _ in range(stamps):
        plex.emit(APP, "app", "web.1", f"stamp {time.time()!r}")
        time.sleep(0.01)
    out = json.loads(follower.stdout.readline())
    stop.set()
    if background:
        background.join()
    follower.wait(10)
    delays = sorted(out["delays"])
    return {
        "p50_ms": statistics.median(delays) * 1000,
        "p99_ms": delays[int(len(delays) * 0.99) - 1] * 1000,
        "max_ms": delays[-1] * 1000,
        "other": out["other"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    lines = 20_000 if args.quick else args.lines
    stamps = 100 if args.quick else 500
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/test-deps installs it)")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()
    print("\n".join(describe()))
    print(f"redis-server {next((v[2:] for v in version if v.startswith('v=')), '?')}, loopback")
    watch = CpuWatch()
    watch.start()
    with tempfile.TemporaryDirectory(prefix="waka-bench-redis-") as tmp:
        server = RedisServer(binary, Path(tmp))
        server.start()
        try:
            memory = flat_out(Logplex(), lines)
            plex = RedisLogplex(server.url)
            redis_cpu = redis_cpu_seconds(plex)
            on_redis = flat_out(plex, lines)
            on_redis["redis_us"] = (redis_cpu_seconds(plex) - redis_cpu) / lines * 1e6
            before = plex.dropped
            paced_lines = paced(plex, 3 if args.quick else 5)
            assert plex.flush(60)
            paced_dropped = plex.dropped - before
            idle = latency(server.url, plex, stamps, load=False)
            busy = latency(server.url, plex, stamps, load=True)
            plex.close()
        finally:
            server.stop()
    others = watch.others_share()

    print(f"\n{lines:,} lines of 100 bytes, one emitting thread, bursts of {BURST:,}:\n")
    report.print_table(
        [
            "Logplex",
            "emit() calls/s",
            "lines/s into the store",
            "emitting process CPU µs/line",
            "redis-server CPU µs/line",
        ],
        [
            [
                "in memory",
                f"{memory['emit_per_s']:,.0f}",
                f"{memory['stored_per_s']:,.0f}",
                f"{memory['cpu_us']:.2f}",
                "",
            ],
            [
                "Redis",
                f"{on_redis['emit_per_s']:,.0f}",
                f"{on_redis['stored_per_s']:,.0f}",
                f"{on_redis['cpu_us']:.2f}",
                f"{on_redis['redis_us']:.2f}",
            ],
        ],
        numeric={1, 2, 3, 4},
    )
    print(f"\nflat out dropped {on_redis['dropped']:.0f}; paced at {PACE:,}/s: "
          f"{paced_lines:,} lines, {paced_dropped} dropped\n")  # fmt: skip
    report.print_table(
        ["emit → --tail feed in another process", "p50 ms", "p99 ms", "max ms"],
        [
            [
                f"idle ({stamps} stamped lines, 10 ms apart)",
                f"{idle['p50_ms']:.2f}",
                f"{idle['p99_ms']:.2f}",
                f"{idle['max_ms']:.2f}",
            ],
            [
                f"while emitting {PACE:,} lines/s ({busy['other']:,} received)",
                f"{busy['p50_ms']:.2f}",
                f"{busy['p99_ms']:.2f}",
                f"{busy['max_ms']:.2f}",
            ],
        ],
        numeric={1, 2, 3},
    )
    print(f"\nother processes used {others:.0%} of the CPUs during the run")


if __name__ == "__main__":
    main()
