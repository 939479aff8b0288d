"""API latency and throughput of a real `waka up`, over HTTP, on SQLite and on PostgreSQL.

For each backend this starts `python -m waka up` in a subprocess with a temporary WAKA_HOME
(and, for PostgreSQL, a fresh schema that is dropped afterwards), creates a user with
`python -m waka users:create` and apps through the API, then measures:

- reads:  GET /apps/<app> and GET /apps/<app>/config-vars (served from the projections)
- writes: PATCH /apps/<app>/config-vars with a changing value (each one appends
          ConfigChanged + Released to the ledger, maybe a snapshot, and brings the
          projections up to date before answering)

first from one connection, one request at a time (latency), then from --concurrency
connections sending back to back (throughput). Writes under concurrency are measured twice:
all connections on one app (they contend for one stream: optimistic concurrency conflicts,
retried in the server) and each connection on its own app.

The load comes from `wrk` (C; `apt-get install -y wrk`) when it is installed, else from an
asyncio httpx client (`--client httpx`). The client shares the machine with the server;
a Python client costs as much CPU per request as the server does, so with httpx the figures
are the client's as much as waka's (see docs/performance.md).

    python bench/api_latency.py            # full run, both backends (~2 minutes)
    python bench/api_latency.py --quick    # a few seconds per backend: checks it still works
    python bench/api_latency.py --backend sqlite --client httpx

PostgreSQL: $WAKA_BENCH_DATABASE_URL, default
postgresql://postgres:postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import CpuWatch, describe

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
HEROKU_ACCEPT = "application/vnd.heroku+json; version=3"


# --- what is measured ------------------------------------------------------------------------


@dataclass
class Case:
    operation: str
    method: str  # GET or PATCH
    path: str  # with {app}: the app of the connection
    clients: int
    seconds: float
    app_per_client: bool = False  # connection n works on app n, else all on app 0


@dataclass
class Result:
    backend: str
    case: Case
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # kind (status code, ...) -> count
    elapsed: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    others_cpu: float = float("nan")  # share of the CPUs other processes used meanwhile

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed else float("nan")


def plan(quick: bool, concurrency: int) -> list[Case]:
    read_s, write_s = (1.0, 1.0) if quick else (6.0, 10.0)
    c = concurrency
    return [
        Case("GET /apps/:app", "GET", "/apps/{app}", 1, read_s),
        Case("GET /apps/:app/config-vars", "GET", "/apps/{app}/config-vars", 1, read_s),
        Case("PATCH /apps/:app/config-vars", "PATCH", "/apps/{app}/config-vars", 1, write_s),
        Case("GET /apps/:app", "GET", "/apps/{app}", c, read_s),
        Case("GET /apps/:app/config-vars", "GET", "/apps/{app}/config-vars", c, read_s),
        Case("PATCH config-vars, one app", "PATCH", "/apps/{app}/config-vars", c, write_s),
        Case(f"PATCH config-vars, {c} apps", "PATCH", "/apps/{app}/config-vars", c, write_s, True),
    ]


def app_name(n: int) -> str:
    return f"bench-app-{n}"


# --- load from wrk ---------------------------------------------------------------------------

# One wrk thread per connection, so that `setup` can give connection n its own app.
WRK_SCRIPT = r"""
local method, path_template, per_client = "%(method)s", "%(path)s", %(per_client)s
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local app = per_client and ("bench-app-" .. id) or "bench-app-0"
  path = string.gsub(path_template, "{app}", app)
  -- wrk.format uses the headers given instead of wrk.headers (the -H ones): copy them.
  patch_headers = {["Content-Type"] = "application/json"}
  for name, value in pairs(wrk.headers) do patch_headers[name] = value end
end

function request()
  counter = counter + 1
  if method == "PATCH" then
    local body = string.format('{"COUNTER": "%%d-%%d"}', id, counter)
    return wrk.format("PATCH", path, patch_headers, body)
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nRESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"status": %%d, "connect": %%d, "read": %%d, "write": %%d, "timeout": %%d}\n',
    summary.requests, summary.duration,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def run_wrk(base_url: str, api_key: str, case: Case, result: Result, workdir: Path) -> None:
    script = workdir / "bench.lua"
    script.write_text(
        WRK_SCRIPT
        % {
            "method": case.method,
            "path": case.path,
            "per_client": "true" if case.app_per_client else "false",
        }
    )
    command = [
        "wrk",
        f"-t{case.clients}",
        f"-c{case.clients}",
        f"-d{case.seconds:g}s",
        "--timeout",
        "60s",
        "-s",
        str(script),
        "-H",
        f"Authorization: Bearer {api_key}",
        "-H",
        f"Accept: {HEROKU_ACCEPT}",
        base_url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    figures = json.loads(line.removeprefix("RESULT "))
    errors = {k: figures[k] for k in ("status", "connect", "read", "write", "timeout")}
    result.errors = {("non-2xx" if k == "status" else k): v for k, v in errors.items() if v}
    result.ok = figures["requests"] - errors["status"] - errors["timeout"]
    result.elapsed = figures["duration_us"] / 1e6
    result.p50_ms = figures["p50_us"] / 1000
    result.p99_ms = figures["p99_us"] / 1000


# --- load from httpx -------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def run_httpx(client: httpx.AsyncClient, case: Case, result: Result) -> None:
    latencies: list[float] = []
    sent = 0

    async def worker(n: int) -> None:
        nonlocal sent
        path = case.path.format(app=app_name(n if case.app_per_client else 0))
        while time.perf_counter() - start < case.seconds:
            sent += 1
            began = time.perf_counter()
            try:
                if case.method == "PATCH":
                    response = await client.patch(path, json={"COUNTER": f"{n}-{sent}"})
                else:
                    response = await client.get(path)
            except httpx.HTTPError as error:
                kind = type(error).__name__
                result.errors[kind] = result.errors.get(kind, 0) + 1
                continue
            if response.is_success:
                latencies.append(time.perf_counter() - began)
            else:
                kind = str(response.status_code)
                result.errors[kind] = result.errors.get(kind, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(case.clients)))
    result.elapsed = time.perf_counter() - start
    latencies.sort()
    result.ok = len(latencies)
    result.p50_ms = percentile(latencies, 50) * 1000
    result.p99_ms = percentile(latencies, 99) * 1000


# --- the server under test -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '30s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class Server:
    base_url: str
    api_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    home: Path


def waka_env(home: Path, database_url: str | None, schema: str | None) -> dict[str, str]:
    # Only the settings given here: a WAKA_* variable of the caller's shell must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAKA_")}
    env["WAKA_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if database_url:
        env["WAKA_DATABASE_URL"] = database_url
        env["WAKA_DATABASE_SCHEMA"] = schema or "public"
    return env


@contextlib.contextmanager
def waka_up(backend: str, database_url: str, server_cpus: str | None) -> Iterator[Server]:
    with contextlib.ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="waka-bench-")))
        if backend == "postgres":
            schema = stack.enter_context(postgres_schema(database_url))
            env = waka_env(home, database_url, schema)
        else:
            env = waka_env(home, None, None)
        created = subprocess.run(
            [sys.executable, "-m", "waka", "users:create", "bench@example.com"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0:
            raise SystemExit(f"waka users:create failed:\n{created.stdout}{created.stderr}")
        api_key = created.stdout.strip().splitlines()[-1]

        port, router_port = free_port(), free_port()
        log_path = home / "waka-up.log"
        log = stack.enter_context(log_path.open("wb"))
        command = ["up", "--host", "127.0.0.1", "--api-port", str(port)]
        command += ["--router-port", str(router_port)]
        pin = ["taskset", "-c", server_cpus] if server_cpus else []
        process = subprocess.Popen(
            [*pin, sys.executable, "-m", "waka", *command],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server(f"http://127.0.0.1:{port}", api_key, process, log_path, home)
        try:
            wait_until_up(server)
            yield server
        finally:
            stop(process)


def wait_until_up(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {server.api_key}", "Accept": HEROKU_ACCEPT}
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"waka up exited early:\n{server.log_path.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base_url}/account", headers=headers, timeout=2).is_success:
                return
        time.sleep(0.1)
    raise SystemExit(f"waka up did not answer in {timeout}s:\n{server.log_path.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the benchmark ---------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


async def prepare(client: httpx.AsyncClient, apps: int, warmup: int) -> None:
    """Create the apps, give them a realistic config, warm up the server's caches and pools."""
    for n in range(apps):
        (await client.post("/apps", json={"name": app_name(n)})).raise_for_status()
        settings = {f"SETTING_{k:02d}": "x" * 40 for k in range(15)}
        (await client.patch(f"/apps/{app_name(n)}/config-vars", json=settings)).raise_for_status()
    for i in range(warmup):
        for path in ("/apps/{app}", "/apps/{app}/config-vars"):
            (await client.get(path.format(app=app_name(0)))).raise_for_status()
        patch = await client.patch(f"/apps/{app_name(0)}/config-vars", json={"WARM": str(i)})
        patch.raise_for_status()


async def bench_backend(
    backend: str, server: Server, cases: list[Case], client_kind: str, warmup: int
) -> list[Result]:
    apps = max(c.clients for c in cases)
    headers = {"Authorization": f"Bearer {server.api_key}", "Accept": HEROKU_ACCEPT}
    limits = httpx.Limits(max_connections=apps, max_keepalive_connections=apps)
    results: list[Result] = []
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=headers, limits=limits, timeout=60
    ) as client:
        await prepare(client, apps, warmup)
        for case in cases:
            result = Result(backend, case)
            watch = CpuWatch()
            watch.start()
            if client_kind == "wrk":
                run_wrk(server.base_url, server.api_key, case, result, server.home)
            else:
                await run_httpx(client, case, result)
            result.others_cpu = watch.others_share()
            results.append(result)
            progress(
                f"{backend:8} {case.operation:30} c={case.clients}: {result.ok} ok, "
                f"errors {result.errors or 0}, p50 {result.p50_ms:.2f} ms, "
                f"other processes {result.others_cpu:.0%} CPU"
            )
        latest = await client.get(
            f"/apps/{app_name(0)}/releases", headers={"Range": "version ..; max=1, order=desc"}
        )
        if latest.is_success and latest.json():
            progress(f"{backend:8} {app_name(0)} ended at release v{latest.json()[0]['version']}")
    return results


def print_table(results: list[Result]) -> None:
    header = ("backend", "operation", "clients", "requests ok", "errors", "p50 ms", "p99 ms",
              "req/s", "others' CPU")  # fmt: skip
    rows = [
        (
            r.backend,
            r.case.operation,
            str(r.case.clients),
            str(r.ok),
            ", ".join(f"{v} {k}" for k, v in r.errors.items()) or "0",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.throughput:.0f}",
            f"{r.others_cpu:.0%}",
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    # A Markdown table: text columns left-aligned, figures right-aligned.
    rule = ["-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(widths)]
    print(line(header))
    print("|" + "|".join(rule) + "|")
    for row in rows:
        print(line(row))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, to check it works")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--concurrency", type=int, default=8, help="connections for throughput")
    parser.add_argument(
        "--client",
        choices=["wrk", "httpx"],
        default="wrk" if shutil.which("wrk") else "httpx",
        help="load generator (wrk when installed)",
    )
    parser.add_argument(
        "--server-cpus", metavar="LIST", help="pin `waka up` to these CPUs (taskset -c LIST)"
    )
    args = parser.parse_args()
    if args.client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install -y wrk), or use --client httpx")

    database_url = os.environ.get("WAKA_BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    cases = plan(args.quick, args.concurrency)
    machine = describe(database_url if "postgres" in backends else None)
    for line in machine:
        progress(line)
    results: list[Result] = []
    for backend in backends:
        with waka_up(backend, database_url, args.server_cpus) as server:
            results += asyncio.run(
                bench_backend(backend, server, cases, args.client, 5 if args.quick else 50)
            )

    reads, writes = cases[0].seconds, cases[2].seconds
    print()
    print(
        f"waka API latency and throughput ({'quick' if args.quick else 'full'} run; "
        f"client: {args.client}; {reads:g} s per read case, {writes:g} s per write case"
        + (f"; server pinned to CPUs {args.server_cpus}" if args.server_cpus else "")
        + ")"
    )
    print("\n".join(machine))
    print(
        "clients=1: one connection, one request at a time; "
        f"clients={args.concurrency}: {args.concurrency} connections sending back to back; "
        "others' CPU: share of the CPUs used meanwhile by processes other than the benchmark, "
        "waka and PostgreSQL (over 5% means noisy figures)"
    )
    print()
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
