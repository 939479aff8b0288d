"""Router throughput with 1, 2 and 4 processes against nginx with as many workers, one run.

One backend for all: nginx serving a 128-byte static file, with a worker per core. In front of
it, on one port each:

- nginx N:  nginx, `worker_processes N`, `listen ... reuseport` (a listening socket per worker,
            the kernel spreading connections over them), `proxy_pass` with a keep-alive upstream,
            no access log;
- waka N:   N processes each running waka's Router on uvloop with SO_REUSEPORT on the same port
            (`Router.serve(..., reuse_port=True)`, as `waka router` copies do), one app routed to
            the backend, every request's log line emitted into Logplex as `waka up` does.

wrk runs with the same threads and connections against each; rounds take the targets in turn
(so that a busy spell of the machine does not fall on one target) and the table shows medians
over the rounds. "proxy CPU µs/req" is the CPU time of all the proxy's processes per request:
it is less sensitive to other load on the machine than req/s.

    python bench/router_processes.py           # 3 rounds of 10 s per target (~4 min)
    python bench/router_processes.py --quick   # one short round: checks it still works

Needs nginx and wrk (`apt-get install -y nginx-light wrk`). Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import CpuWatch, describe
from router_throughput import (
    APP_HOST,
    BODY,
    LOOPBACK,
    ROOT,
    Server,
    _cpu_ticks,
    _ms,
    check,
    free_port,
    median,
    progress,
    serve_router,
    stop,
    wait_for_port,
)

COUNTS = (1, 2, 4)
SCRIPT = Path(__file__).name


@dataclass
class Target:
    name: str
    kind: str  # "nginx" or "waka"
    processes: int
    server: Server
    pids: list[int]  # the processes whose CPU time is the proxy's


@dataclass
class Run:
    rps: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: int = 0
    cpu_us: float = float("nan")
    others_cpu: float = float("nan")


@dataclass
class Figures:
    target: Target
    runs: list[Run] = field(default_factory=list)


# --- the servers ------------------------------------------------------------------------------


def _nginx_conf(tmp: Path, name: str, workers: int, server: str, http_extra: str = "") -> Path:
    conf = tmp / f"{name}.conf"
    conf.write_text(
        f"""worker_processes {workers};
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


def _children(parent: int, count: int) -> list[int]:
    """nginx's workers: the master's children, once all `count` have started."""
    found: list[int] = []
    for _ in range(200):
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if int(stat[stat.rfind(")") + 2 :].split()[1]) == parent:
                        found.append(int(entry.name))
        if len(found) >= count:
            return found
        time.sleep(0.05)
    return found or [parent]


@contextlib.contextmanager
def nginx(
    tmp: Path, name: str, workers: int, port: int, server: str, extra: str = ""
) -> Iterator[tuple[Server, list[int]]]:
    conf = _nginx_conf(tmp, name, workers, server, extra)
    process = subprocess.Popen(
        ["nginx", "-p", str(tmp), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, f"nginx ({name})")
        workers_pids = _children(process.pid, workers)
        yield Server(name, port, process, workers_pids[0]), workers_pids
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def backend(tmp: Path) -> Iterator[Server]:
    root = tmp / "www"
    root.mkdir()
    (root / "index.html").write_bytes(BODY)
    port = free_port()
    workers = os.cpu_count() or 1
    with nginx(tmp, "backend", workers, port, f"listen {LOOPBACK}:{port};\n    root {root};") as (
        server,
        _,
    ):
        yield server


@contextlib.contextmanager
def nginx_proxy(tmp: Path, backend_port: int, workers: int) -> Iterator[Target]:
    port = free_port()
    name = f"nginx-{workers}"
    upstream = f"upstream dyno {{ server {LOOPBACK}:{backend_port}; keepalive 64; }}"
    location = 'proxy_pass http://dyno; proxy_http_version 1.1; proxy_set_header Connection "";'
    server = f"listen {LOOPBACK}:{port} reuseport;\n    location / {{ {location} }}"
    with nginx(tmp, name, workers, port, server, upstream) as (served, pids):
        yield Target(f"nginx, {workers} worker(s)", "nginx", workers, served, pids)


@contextlib.contextmanager
def waka_routers(
    backend_port: int, count: int, root: Path = ROOT, label: str = ""
) -> Iterator[Target]:
    """`root`: the checkout whose router runs (another commit's, for a before/after run)."""
    port, backend = free_port(), str(backend_port)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            process = subprocess.Popen(
                [sys.executable, root / "bench" / SCRIPT, "--serve-router", str(port), backend],
                cwd=root,
                stdout=subprocess.DEVNULL,
            )
            processes.append(process)
            wait_for_port(port, process, "waka's router")
        time.sleep(0.5)  # the last ones to bind: wait_for_port may have reached the first
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a router process exited with status {process.returncode}")
        server = Server(f"waka-{count}", port, processes[0], processes[0].pid)
        yield Target(
            f"waka router{label}, {count} process(es)",
            "waka",
            count,
            server,
            [p.pid for p in processes],
        )
    finally:
        for process in processes:
            stop(process)


# --- measuring --------------------------------------------------------------------------------


def wrk(target: Target, connections: int, threads: int, seconds: int) -> Run:
    watch = CpuWatch()
    watch.start()
    ticks = sum(_cpu_ticks(pid) for pid in target.pids)
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-H", f"Host: {APP_HOST}", f"http://{LOOPBACK}:{target.server.port}/"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    ticks = sum(_cpu_ticks(pid) for pid in target.pids) - ticks
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


def spread(target: Target) -> None:
    """With several processes, each must be serving (each takes some of 200 connections)."""
    if target.processes == 1:
        return
    before = {pid: _cpu_ticks(pid) for pid in target.pids}
    subprocess.run(
        ["wrk", "-t1", "-c200", "-d2s", "-H", f"Host: {APP_HOST}",
         f"http://{LOOPBACK}:{target.server.port}/"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    idle = [pid for pid in target.pids if _cpu_ticks(pid) == before[pid]]
    if idle:
        raise RuntimeError(f"{target.name}: processes {idle} served nothing")


# --- the report -------------------------------------------------------------------------------


def table(figures: list[Figures], connections: int) -> list[str]:
    nginx_rps = {
        f.target.processes: median([r.rps for r in f.runs])
        for f in figures
        if f.target.kind == "nginx"
    }
    nginx_cpu = {
        f.target.processes: median([r.cpu_us for r in f.runs])
        for f in figures
        if f.target.kind == "nginx"
    }
    header = ("target", f"req/s (c={connections})", "vs nginx, same count", "p50 ms", "p99 ms",
              "proxy CPU µs/req", "vs nginx, per CPU", "errors", "others' CPU")  # fmt: skip
    rows = []
    for f in figures:
        rps = median([r.rps for r in f.runs])
        cpu = median([r.cpu_us for r in f.runs])
        n = f.target.processes
        rows.append(
            (
                f.target.name,
                f"{rps:.0f}",
                f"{rps / nginx_rps[n]:.2f}x" if n in nginx_rps else "",
                f"{median([r.p50_ms for r in f.runs]):.2f}",
                f"{median([r.p99_ms for r in f.runs]):.2f}",
                f"{cpu:.1f}",
                f"{nginx_cpu[n] / cpu:.2f}x" if n in nginx_cpu else "",
                str(sum(r.errors for r in f.runs)),
                f"{max((r.others_cpu for r in f.runs), default=float('nan')):.0%}",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)
    )
    return [line(header), rule + "|", *(line(row) for row in rows)]


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round: checks it works")
    parser.add_argument("--rounds", type=int, help="rounds over all targets (3)")
    parser.add_argument("--seconds", type=int, help="seconds per run (10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--counts", default=",".join(map(str, COUNTS)),
                        help="process/worker counts (1,2,4)")  # fmt: skip
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="also run the router of this checkout (an older commit's: "
                        "git archive <commit> waka bench | tar -x -C DIR)")  # fmt: skip
    parser.add_argument("--serve-router", nargs=2, metavar=("PORT", "BACKEND_PORT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.serve_router:
        port, backend_port = args.serve_router
        serve_router(int(port), int(backend_port), "uvloop", reuse_port=True)
        return 0
    missing = [tool for tool in ("nginx", "wrk") if not shutil.which(tool)]
    if missing:
        parser.error(f"{' and '.join(missing)} not installed (apt-get install -y nginx-light wrk)")
    try:
        import uvloop  # noqa: F401
    except ImportError:
        parser.error("uvloop is not installed (the router runs on it in waka)")
    counts = [int(c) for c in args.counts.split(",")]
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = int(args.seconds or (1 if args.quick else 10))

    machine = describe()
    for text in machine:
        progress(text)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="waka-bench-")))
        tmp.chmod(0o755)  # nginx's workers run as nobody when started by root
        dyno = stack.enter_context(backend(tmp))
        targets = [stack.enter_context(nginx_proxy(tmp, dyno.port, n)) for n in counts]
        targets += [stack.enter_context(waka_routers(dyno.port, n)) for n in counts]
        if args.baseline is not None:
            label = f" ({args.baseline.name})"
            targets += [
                stack.enter_context(waka_routers(dyno.port, n, args.baseline.resolve(), label))
                for n in counts
            ]
        figures = {t.name: Figures(t) for t in targets}
        for target in targets:
            check(target.server)
            spread(target)
            if not args.quick:
                wrk(target, args.connections, args.threads, 1)  # warm up: connections, pools
        for round_ in range(rounds):
            order = targets[round_ % len(targets) :] + targets[: round_ % len(targets)]
            for target in order:
                run = wrk(target, args.connections, args.threads, seconds)
                figures[target.name].runs.append(run)
                progress(
                    f"round {round_ + 1}/{rounds} {target.name:28} {run.rps:8.0f} req/s, "
                    f"p99 {run.p99_ms:.2f} ms, {run.cpu_us:.1f} µs CPU/req, errors "
                    f"{run.errors}, others' CPU {run.others_cpu:.0%}"
                )

    print()
    print(
        f"waka's router against nginx, 1 to {max(counts)} processes ("
        f"{'quick' if args.quick else 'full'} run: {rounds} round(s) of wrk -t{args.threads} "
        f"-c{args.connections} -d{seconds}s per target; medians over the rounds)"
    )
    print("\n".join(machine))
    print(
        f"backend: nginx, {os.cpu_count()} workers, a {len(BODY)}-byte static file; each proxy "
        "keeps connections to it alive; nginx listens with reuseport, waka's routers with "
        "SO_REUSEPORT; waka's router logs every request into Logplex as `waka up` does; "
        "proxy CPU: CPU time of all the proxy's processes per request; others' CPU: share of "
        "the CPUs used meanwhile by processes other than the benchmark's"
    )
    print()
    print("\n".join(table([figures[t.name] for t in targets], args.connections)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
