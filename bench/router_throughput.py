"""Router throughput and added latency: waka's router against nginx `proxy_pass`, same backend.

One backend (nginx, one worker, serving a small static file) answers for all; in front of it,
side by side in one run:

- direct:           wrk straight to the backend (the baseline for added latency)
- nginx:            nginx, 1 worker, `proxy_pass` with a keep-alive upstream, no access log
- nginx, same work: the same plus what waka's router does per request: X-Forwarded-For/Proto/
                    Port, X-Request-Id, X-Request-Start and a Heroku-style access log line
- waka (uvloop):    waka's router, one process, on uvloop (as `waka up` runs it when installed)
- waka (asyncio):   the same on the standard library's event loop
- waka, Redis:      waka's router on uvloop with Logplex on Redis (a redis-server of the
                    run's own), as `waka router` copies run with WAKA_REDIS_URL
- floor:            a bare Python relay on uvloop (a backend connection per client, bytes both
                    ways untouched): the same reads, writes and callbacks as the router's and
                    nothing else, i.e. the least any proxy built this way can cost

Each is measured with wrk, fixed threads and connections, in rounds that take the targets in
turn (so that a busy spell of the machine does not fall on one target); the table shows each
figure's median over the rounds. Throughput: --connections connections sending back to back.
Latency: one connection, one request at a time (p50 and p99 of wrk's distribution); the
router's added latency is its p50 minus the backend's own.

    python bench/router_throughput.py           # 3 rounds of 10 s + 5 s per target (~4 min)
    python bench/router_throughput.py --quick   # one short round: checks it still works

Needs nginx and wrk (`apt-get install -y nginx-light wrk`). Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import CpuWatch, describe

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
APP_HOST = "bench.localhost"
BODY = (b"Hello from a dyno. " * 7)[:128]  # the backend's answer: a small static file


# --- the servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    worker: int  # the pid whose CPU time is the proxy's (nginx's worker, the router itself)


def _nginx_conf(tmp: Path, name: str, server: str, http_extra: str = "") -> Path:
    conf = tmp / f"{name}.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path {tmp}/{name}.body;
  proxy_temp_path {tmp}/{name}.proxy;
  {http_extra}
  server {{
{server}
  }}
}}
"""
    )
    return conf


def _worker_of(master: int) -> int:
    """nginx's worker process: the master's child."""
    for _ in range(100):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if int(stat[stat.rfind(")") + 2 :].split()[1]) == master:
                        return int(entry.name)
        time.sleep(0.05)
    return master


@contextlib.contextmanager
def nginx(tmp: Path, name: str, server: str, http_extra: str = "") -> Iterator[Server]:
    conf = _nginx_conf(tmp, name, server, http_extra)
    port = int(re.search(r"listen 127\.0\.0\.1:(\d+)", server).group(1))  # type: ignore[union-attr]
    process = subprocess.Popen(
        ["nginx", "-p", str(tmp), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, f"nginx ({name})")
        yield Server(name, port, process, _worker_of(process.pid))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def backend(tmp: Path) -> contextlib.AbstractContextManager[Server]:
    root = tmp / "www"
    root.mkdir()
    (root / "index.html").write_bytes(BODY)
    port = free_port()
    return nginx(tmp, "backend", f"listen {LOOPBACK}:{port};\n    root {root};")


def nginx_proxy(
    tmp: Path, backend_port: int, same_work: bool
) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    name = "nginx-same-work" if same_work else "nginx"
    upstream = f"upstream dyno {{ server {LOOPBACK}:{backend_port}; keepalive 64; }}"
    location = 'proxy_pass http://dyno; proxy_http_version 1.1; proxy_set_header Connection "";'
    extra = upstream
    if same_work:
        location += (
            " proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
            " proxy_set_header X-Forwarded-Proto $scheme;"
            " proxy_set_header X-Forwarded-Port $server_port;"
            " proxy_set_header X-Request-Id $request_id;"
            " proxy_set_header X-Request-Start $msec;"
        )
        extra += (
            '\n  log_format heroku \'at=info method=$request_method path="$request_uri" '
            'host=$host request_id=$request_id fwd="$proxy_add_x_forwarded_for" dyno=web.1 '
            "connect=$upstream_connect_time service=$upstream_response_time status=$status "
            f"bytes=$bytes_sent protocol=http';\n  access_log {tmp}/{name}.access.log heroku "
            "buffer=64k;"
        )
    server = f"listen {LOOPBACK}:{port};\n    location / {{ {location} }}"
    return nginx(tmp, name, server, extra)


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A redis-server of the run's own (no persistence) -> its URL."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, process, "redis-server")
        yield f"redis://{LOOPBACK}:{port}/0"
    finally:
        stop(process)


@contextlib.contextmanager
def waka_router(backend_port: int, loop: str, redis_url: str = "") -> Iterator[Server]:
    """`loop`: uvloop or asyncio, or "relay" for the floor; with `redis_url`, Logplex on Redis
    (as `waka router` copies run with WAKA_REDIS_URL)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-router", str(port), str(backend_port), loop],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "WAKA_BENCH_REDIS_URL": redis_url},
    )
    name = RELAY if loop == "relay" else f"waka ({loop}{', Logplex on Redis' if redis_url else ''})"
    try:
        wait_for_port(port, process, name)
        yield Server(name, port, process, process.pid)
    finally:
        stop(process)


RELAY = "floor: bare Python relay (uvloop)"


def serve_relay(port: int, backend_port: int) -> None:
    """The floor of any proxy built as waka's router is (Python callbacks on uvloop): each
    client connection gets a connection to the backend, and bytes are relayed both ways as
    they come, untouched: no parsing, no routing, no headers, no log line. The same reads,
    writes and callbacks per request as the router's, nothing else."""

    class Side(asyncio.Protocol):
        def __init__(self) -> None:
            self.peer: Side | None = None
            self.transport: asyncio.Transport | None = None
            self.pending: list[bytes] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            peer = self.peer
            if peer is not None and peer.transport is not None:
                peer.transport.write(data)
            else:
                self.pending.append(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def connect(client: Side) -> None:
            _, dyno = await loop.create_connection(Side, LOOPBACK, backend_port)
            dyno.peer, client.peer = client, dyno
            for data in client.pending:
                dyno.transport.write(data)  # type: ignore[union-attr]
            client.pending.clear()

        connecting: set[asyncio.Task[None]] = set()

        def accepted() -> Side:
            client = Side()
            task = loop.create_task(connect(client))
            connecting.add(task)
            task.add_done_callback(connecting.discard)
            return client

        await loop.create_server(accepted, LOOPBACK, port, reuse_address=True, backlog=1024)
        await asyncio.Future()

    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())


def serve_router(port: int, backend_port: int, loop: str, reuse_port: bool = False) -> None:
    """The router process: one app, one web dyno (the backend), its log lines into Logplex
    as `waka up` wires them (or, without waka.logplex, a buffer of the last 1,500). With
    `reuse_port`, several such processes share the port (SO_REUSEPORT), as `waka router`
    copies do."""
    sys.path.insert(0, str(ROOT))
    from waka.router import Backend, Route, Router, RouteTable

    table = RouteTable()
    table.set_app(Route("bench-id", "bench", backends=(Backend(LOOPBACK, backend_port, "web.1"),)))
    try:
        from waka.logplex import Logplex
        from waka.logplex.redis_logplex import RedisLogplex

        redis_url = os.environ.get("WAKA_BENCH_REDIS_URL")
        logplex = RedisLogplex(redis_url) if redis_url else Logplex()

        def log(app_id: str, line: str) -> None:
            logplex.emit(app_id, "heroku", "router", line)
    except ImportError:
        lines: collections.deque[str] = collections.deque(maxlen=1500)

        def log(app_id: str, line: str) -> None:
            lines.append(line)

    router = Router(table, log=log)
    with contextlib.suppress(KeyboardInterrupt):
        if loop == "uvloop":
            import uvloop

            uvloop.run(router.serve(LOOPBACK, port, reuse_port=reuse_port))
        else:
            asyncio.run(router.serve(LOOPBACK, port, reuse_port=reuse_port))


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: int = 0
    cpu_us: float = float("nan")  # the proxy's CPU time per request
    others_cpu: float = float("nan")


@dataclass
class Figures:
    name: str
    load: list[Run] = field(default_factory=list)
    latency: list[Run] = field(default_factory=list)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def _cpu_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wrk(server: Server, connections: int, threads: int, seconds: int) -> Run:
    watch = CpuWatch()
    watch.start()
    ticks = _cpu_ticks(server.worker)
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-H", f"Host: {APP_HOST}", f"http://{LOOPBACK}:{server.port}/"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    ticks = _cpu_ticks(server.worker) - ticks
    out = done.stdout
    run = Run(others_cpu=watch.others_share())
    if found := re.search(r"Requests/sec:\s+([\d.]+)", out):
        run.rps = float(found.group(1))
    if found := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        run.p50_ms = _ms(found.group(1))
    if found := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        run.p99_ms = _ms(found.group(1))
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: (.*)"):
        if found := re.search(pattern, out):
            run.errors += sum(int(n) for n in re.findall(r"\d+", found.group(1)))
    requests = run.rps * seconds
    if requests > 0:
        run.cpu_us = ticks / os.sysconf("SC_CLK_TCK") / requests * 1e6
    return run


def check(server: Server) -> None:
    """One request through `server` must bring the backend's file back."""
    conn = http.client.HTTPConnection(LOOPBACK, server.port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": APP_HOST})
        answer = conn.getresponse()
        body = answer.read()
    finally:
        conn.close()
    if answer.status != 200 or body != BODY:
        raise RuntimeError(f"{server.name}: answered {answer.status} {body[:80]!r}")


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


# --- the report -------------------------------------------------------------------------------


def print_table(figures: list[Figures], connections: int) -> None:
    header = ("target", f"req/s (c={connections})", "p50 ms", "p99 ms", "proxy CPU µs/req",
              "p50 ms (c=1)", "p99 ms (c=1)", "errors", "others' CPU")  # fmt: skip
    rows = []
    for f in figures:
        runs = f.load + f.latency
        rows.append(
            (
                f.name,
                f"{median([r.rps for r in f.load]):.0f}",
                f"{median([r.p50_ms for r in f.load]):.2f}",
                f"{median([r.p99_ms for r in f.load]):.2f}",
                "" if f.name == "direct" else f"{median([r.cpu_us for r in f.load]):.1f}",
                f"{median([r.p50_ms for r in f.latency]):.3f}",
                f"{median([r.p99_ms for r in f.latency]):.3f}",
                str(sum(r.errors for r in runs)),
                f"{max((r.others_cpu for r in runs), default=float('nan')):.0%}",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    print(line(header))
    print(
        "|"
        + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    for row in rows:
        print(line(row))


def summary(figures: list[Figures]) -> list[str]:
    """The figures the targets are about: waka's throughput as a share of nginx's, measured
    (req/s) and per CPU time (less sensitive to a busy machine), and its added latency."""
    by_name = {f.name: f for f in figures}

    def p50_added(name: str) -> float:
        direct = median([r.p50_ms for r in by_name["direct"].latency])
        return (median([r.p50_ms for r in by_name[name].latency]) - direct) * 1000

    lines = []
    for name in ("waka (uvloop)", "waka (asyncio)", "waka (uvloop, Logplex on Redis)", RELAY):
        if name not in by_name:
            continue
        rps = median([r.rps for r in by_name[name].load])
        cpu = median([r.cpu_us for r in by_name[name].load])
        parts = [f"{name}: added latency at p50 {p50_added(name):.0f} µs"]
        for other in ("nginx", "nginx, same work"):
            base = median([r.rps for r in by_name[other].load])
            base_cpu = median([r.cpu_us for r in by_name[other].load])
            parts.append(
                f"vs {other} (added p50 {p50_added(other):.0f} µs): {rps / base:.0%} of its "
                f"req/s, {base_cpu / cpu:.0%} of its requests per CPU second"
            )
        lines.append("; ".join(parts))
    return lines


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round: checks it works")
    parser.add_argument("--rounds", type=int, help="rounds over all targets (3)")
    parser.add_argument("--seconds", type=int, help="seconds per throughput run (10)")
    parser.add_argument("--connections", type=int, default=32, help="for throughput (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--serve-router", nargs=3, metavar=("PORT", "BACKEND_PORT", "LOOP"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.serve_router:
        port, backend_port, loop = args.serve_router
        if loop == "relay":
            serve_relay(int(port), int(backend_port))
        else:
            serve_router(int(port), int(backend_port), loop)
        return 0
    missing = [tool for tool in ("nginx", "wrk") if not shutil.which(tool)]
    if missing:
        parser.error(f"{' and '.join(missing)} not installed (apt-get install -y nginx-light wrk)")
    rounds = args.rounds or (1 if args.quick else 3)
    load_s = int(args.seconds or (1 if args.quick else 10))  # wrk takes whole seconds
    latency_s = max(1, load_s // 2)
    loops = ["uvloop", "asyncio"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        loops = ["asyncio"]
        progress("uvloop is not installed: waka's router runs on asyncio's own loop only")

    machine = describe()
    for text in machine:
        progress(text)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="waka-bench-")))
        tmp.chmod(0o755)  # nginx's workers run as nobody when started by root
        dyno = stack.enter_context(backend(tmp))
        servers = [Server("direct", dyno.port, dyno.process, dyno.worker)]
        servers.append(stack.enter_context(nginx_proxy(tmp, dyno.port, same_work=False)))
        servers.append(stack.enter_context(nginx_proxy(tmp, dyno.port, same_work=True)))
        servers[-1].name = "nginx, same work"
        servers += [stack.enter_context(waka_router(dyno.port, loop)) for loop in loops]
        if shutil.which("redis-server"):
            url = stack.enter_context(redis_server(tmp))
            servers.append(stack.enter_context(waka_router(dyno.port, loops[0], url)))
        else:
            progress("redis-server is not installed: no run with Logplex on Redis")
        if "uvloop" in loops:
            servers.append(stack.enter_context(waka_router(dyno.port, "relay")))
        figures = {s.name: Figures(s.name) for s in servers}
        for server in servers:
            check(server)
            if not args.quick:
                wrk(server, args.connections, args.threads, 1)  # warm up: connections, pools
        for round_ in range(rounds):
            order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
            for server in order:
                load = wrk(server, args.connections, args.threads, load_s)
                latency = wrk(server, 1, 1, latency_s)
                figures[server.name].load.append(load)
                figures[server.name].latency.append(latency)
                progress(
                    f"round {round_ + 1}/{rounds} {server.name:16} {load.rps:8.0f} req/s, "
                    f"p50 {latency.p50_ms:.3f} ms at c=1, errors {load.errors + latency.errors}, "
                    f"others' CPU {max(load.others_cpu, latency.others_cpu):.0%}"
                )

    results = [figures[s.name] for s in servers]
    print()
    print(
        f"waka's router against nginx proxy_pass ({'quick' if args.quick else 'full'} run: "
        f"{rounds} round(s); wrk -t{args.threads} -c{args.connections} -d{load_s:g}s and "
        f"wrk -t1 -c1 -d{latency_s:g}s per target and round; medians over the rounds)"
    )
    print("\n".join(machine))
    print(
        f"backend: nginx, 1 worker, a {len(BODY)}-byte static file; proxies: 1 worker process "
        "each, keep-alive connections to the backend; waka's router logs each request into "
        "Logplex as `waka up` does; proxy CPU: the proxy process's CPU time "
        "per request under load; others' CPU: share of the CPUs used meanwhile by processes "
        "other than the benchmark's (over 5% means noisy figures)"
    )
    print()
    print_table(results, args.connections)
    print()
    for text in summary(results):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
