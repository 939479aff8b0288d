"""Control-plane writes/s with one and with two API processes on one PostgreSQL, over HTTP.

Starts `waka api` processes (each with its own WAKA_HOME: they share only the database, its
schema and WAKA_CIPHER_KEY, as copies on different hosts would), creates a user and apps, and
drives `PATCH /apps/:app/config-vars` (a ConfigChanged and a Released in the ledger, the read
models caught up before the answer) with `wrk`:

- clients=1 on one API: the latency of one write;
- N clients, each on its own app, all on one API, then split over two APIs;
- N clients on ONE app split over two APIs: the two processes race for the same stream, and
  optimistic concurrency (retried in the server) must keep every write.

After each case every app's releases are counted through the API: each answered write made
exactly one release (none lost, none doubled; a request still in flight when wrk stopped may
have made one more). "API CPU ms/write" is the CPU time the API processes used per answered
write (from /proc): unlike latency, other work on the machine inflates it little.

    python bench/control_plane_writes.py              # full run (~1.5 minutes)
    python bench/control_plane_writes.py --quick      # a few seconds per case
    python bench/control_plane_writes.py --waka-root /tmp/older-checkout   # other code

PostgreSQL: $WAKA_BENCH_DATABASE_URL, default
postgresql://postgres:postgres@127.0.0.1:5432/postgres (a fresh schema, dropped afterwards).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_latency import (
    DEFAULT_DATABASE_URL,
    HEROKU_ACCEPT,
    free_port,
    percentile,
    postgres_schema,
    stop,
)
from machine import CpuWatch, describe

ROOT = Path(__file__).resolve().parent.parent

# wrk, one thread per connection; connection n writes app n (or all app 0); done() prints the
# latency quantiles so that two wrk runs (one per API) can be merged into one distribution.
WRK_SCRIPT = r"""
local per_client, first = %(per_client)s, %(first)d
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads + first)
  table.insert(threads, thread)
end

function init(args)
  local app = per_client and ("bench-app-" .. id) or "bench-app-0"
  path = "/apps/" .. app .. "/config-vars"
  patch_headers = {["Content-Type"] = "application/json"}
  for name, value in pairs(wrk.headers) do patch_headers[name] = value end
end

function request()
  counter = counter + 1
  local body = string.format('{"COUNTER": "%%d-%%d"}', id, counter)
  return wrk.format("PATCH", path, patch_headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local q = {}
  for i = 1, 999 do q[i] = latency:percentile(i / 10) end
  io.write(string.format(
    '\nRESULT {"requests": %%d, "duration_us": %%d, "status": %%d, "connect": %%d, ' ..
    '"read": %%d, "write": %%d, "timeout": %%d, "quantiles_us": [%%s]}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    table.concat(q, ",")))
end
"""


@dataclass
class Api:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Case:
    name: str
    apis: int  # how many API processes the clients are spread over
    clients: int
    one_app: bool  # all clients on app 0, else client n on app n
    seconds: float


@dataclass
class Result:
    case: Case
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    releases_made: int = 0
    others_cpu: float = float("nan")
    api_cpu_s: float = 0.0  # CPU time the API processes used during the case

    @property
    def cpu_per_write_ms(self) -> float:
        return self.api_cpu_s / self.ok * 1000 if self.ok else float("nan")

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else float("nan")


def plan(quick: bool, clients: int) -> list[Case]:
    s = 2.0 if quick else 10.0
    return [
        Case("1 API, one client", 1, 1, False, s),
        Case("2 APIs, one client each", 2, 2, False, s),
        Case(f"1 API, {clients} clients, own apps", 1, clients, False, s),
        Case(f"2 APIs, {clients} clients, own apps", 2, clients, False, s),
        Case(f"1 API, {clients} clients, one app", 1, clients, True, s),
        Case(f"2 APIs, {clients} clients, one app", 2, clients, True, s),
    ]


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def waka_env(home: Path, database_url: str, schema: str, key: str, waka_root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAKA_")}
    env.update(
        WAKA_HOME=str(home),
        WAKA_DATABASE_URL=database_url,
        WAKA_DATABASE_SCHEMA=schema,
        WAKA_CIPHER_KEY=key,
        PYTHONPATH=os.pathsep.join(filter(None, [str(waka_root), env.get("PYTHONPATH")])),
    )
    return env


@contextlib.contextmanager
def api_processes(
    count: int, database_url: str, waka_root: Path
) -> Iterator[tuple[list[Api], str]]:
    """`count` `waka api` processes on one fresh schema; yields them and an API key."""
    from eventsourcing.cipher import AESCipher

    key = AESCipher.create_key(num_bytes=32)
    with contextlib.ExitStack() as stack:
        schema = stack.enter_context(postgres_schema(database_url))
        homes = [
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"waka-api{n}-")))
            for n in range(count)
        ]
        env0 = waka_env(homes[0], database_url, schema, key, waka_root)
        created = subprocess.run(
            [sys.executable, "-m", "waka", "users:create", "bench@example.com"],
            env=env0,
            cwd=waka_root,
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0:
            raise SystemExit(f"waka users:create failed:\n{created.stdout}{created.stderr}")
        api_key = created.stdout.strip().splitlines()[-1]
        apis: list[Api] = []
        try:
            for home in homes:
                port = free_port()
                log_path = home / "waka-api.log"
                log = stack.enter_context(log_path.open("wb"))
                command = [sys.executable, "-m", "waka", "api", "--host", "127.0.0.1"]
                command += ["--port", str(port), "--tls-port", "0"]
                command += ["--rendezvous-port", str(free_port())]
                process = subprocess.Popen(
                    command,
                    env=waka_env(home, database_url, schema, key, waka_root),
                    cwd=waka_root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                apis.append(Api(f"http://127.0.0.1:{port}", process, log_path))
                wait_until_up(apis[-1], api_key)  # one at a time: each sets up the schema
            yield apis, api_key
        finally:
            for api in apis:
                stop(api.process)


def wait_until_up(api: Api, api_key: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {api_key}", "Accept": HEROKU_ACCEPT}
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise SystemExit(f"waka api exited early:\n{api.log_path.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api.base_url}/account", headers=headers, timeout=2).is_success:
                return
        time.sleep(0.1)
    raise SystemExit(f"waka api did not answer in {timeout}s:\n{api.log_path.read_text()}")


def client(api: Api, api_key: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}", "Accept": HEROKU_ACCEPT}
    return httpx.Client(base_url=api.base_url, headers=headers, timeout=60)


def latest_release(http: httpx.Client, app: int) -> int:
    response = http.get(
        f"/apps/bench-app-{app}/releases", headers={"Range": "version ..; max=1, order=desc"}
    )
    response.raise_for_status()
    return int(response.json()[0]["version"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_case(case: Case, apis: list[Api], api_key: str, workdir: Path) -> Result:
    """wrk on each API at once, the clients split between them; merged figures."""
    used = apis[: case.apis]
    shares = [case.clients // len(used) + (n < case.clients % len(used)) for n in range(len(used))]
    apps = [0] if case.one_app else list(range(case.clients))
    with client(apis[0], api_key) as http:
        before = {a: latest_release(http, a) for a in apps}
    cpu_before = sum(cpu_seconds(api.process.pid) for api in used)
    runs, first = [], 0
    for n, (api, share) in enumerate(zip(used, shares, strict=True)):
        script = workdir / f"writes-{n}.lua"
        script.write_text(
            WRK_SCRIPT % {"per_client": "false" if case.one_app else "true", "first": first}
        )
        first += share
        command = ["wrk", f"-t{share}", f"-c{share}", f"-d{case.seconds:g}s", "--timeout", "60s"]
        command += ["-s", str(script), "-H", f"Authorization: Bearer {api_key}"]
        command += ["-H", f"Accept: {HEROKU_ACCEPT}", api.base_url]
        runs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    result = Result(case)
    samples: list[float] = []
    for run in runs:
        out, err = run.communicate()
        line = next((ln for ln in out.decode().splitlines() if ln.startswith("RESULT ")), None)
        if run.returncode != 0 or line is None:
            raise SystemExit(f"wrk failed ({run.returncode}):\n{out.decode()}{err.decode()}")
        figures = json.loads(line.removeprefix("RESULT "))
        for kind in ("status", "connect", "read", "write", "timeout"):
            if figures[kind]:
                label = "non-2xx" if kind == "status" else kind
                result.errors[label] = result.errors.get(label, 0) + figures[kind]
        ok = figures["requests"] - figures["status"] - figures["timeout"]
        result.ok += ok
        result.elapsed = max(result.elapsed, figures["duration_us"] / 1e6)
        # This run's distribution, as 999 quantiles, weighted by its number of requests.
        quantiles = figures["quantiles_us"]
        samples += [quantiles[int(i * 999 / max(1, ok))] / 1000 for i in range(ok)]
    result.api_cpu_s = sum(cpu_seconds(api.process.pid) for api in used) - cpu_before
    samples.sort()
    result.p50_ms = percentile(samples, 50)
    result.p99_ms = percentile(samples, 99)
    time.sleep(0.5)  # the last requests wrk abandoned, still being answered
    with client(apis[0], api_key) as http:
        result.releases_made = sum(latest_release(http, a) - before[a] for a in apps)
    return result


def prepare(apis: list[Api], api_key: str, apps: int) -> None:
    with client(apis[0], api_key) as http:
        for n in range(apps):
            http.post("/apps", json={"name": f"bench-app-{n}"}).raise_for_status()
            settings = {f"SETTING_{k:02d}": "x" * 40 for k in range(15)}
            http.patch(f"/apps/bench-app-{n}/config-vars", json=settings).raise_for_status()
    for api in apis:  # warm each process: pools, prepared statements, aggregate caches
        with client(api, api_key) as http:
            for i in range(30):
                http.patch("/apps/bench-app-0/config-vars", json={"WARM": str(i)})


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per case")
    parser.add_argument("--clients", type=int, default=8, help="connections (8)")
    parser.add_argument(
        "--waka-root", type=Path, default=ROOT, help="the waka checkout the APIs run from"
    )
    args = parser.parse_args()
    database_url = os.environ.get("WAKA_BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    machine = describe(database_url)
    for line in machine:
        progress(line)
    cases = plan(args.quick, args.clients)
    results: list[Result] = []
    with api_processes(2, database_url, args.waka_root.resolve()) as (apis, api_key):
        prepare(apis, api_key, args.clients)
        with tempfile.TemporaryDirectory(prefix="waka-bench-wrk-") as workdir:
            for case in cases:
                watch = CpuWatch()
                watch.start()
                result = run_case(case, apis, api_key, Path(workdir))
                result.others_cpu = watch.others_share()
                results.append(result)
                progress(
                    f"{case.name:34} {result.ok} ok, errors {result.errors or 0}, "
                    f"{result.rate:.0f}/s, p50 {result.p50_ms:.2f} ms, API CPU "
                    f"{result.cpu_per_write_ms:.2f} ms/write, releases "
                    f"{result.releases_made}, others {result.others_cpu:.0%} CPU"
                )
    print()
    print(
        f"control-plane writes (PATCH /apps/:app/config-vars) over HTTP, `waka api` processes "
        f"on one PostgreSQL ({'quick' if args.quick else 'full'} run; code: "
        f"{args.waka_root.resolve()})"
    )
    print("\n".join(machine))
    print()
    header = ("case", "APIs", "clients", "writes ok", "errors", "writes/s", "p50 ms", "p99 ms",
              "API CPU ms/write", "releases made", "others' CPU")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    lost = False
    for r in results:
        errors = ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "0"
        print(
            f"| {r.case.name} | {r.case.apis} | {r.case.clients} | {r.ok} | {errors} | "
            f"{r.rate:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_per_write_ms:.2f} | "
            f"{r.releases_made} | "
            f"{r.others_cpu:.0%} |"
        )
        lost |= not r.ok <= r.releases_made <= r.ok + r.case.clients
    if lost:
        print("\nWARNING: releases made differ from writes answered: a write lost or doubled")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
