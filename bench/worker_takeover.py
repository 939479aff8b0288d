"""How fast a worker's crash is covered: `waka api`, `waka router` and two `waka worker`s, each
with a home of its own, on one PostgreSQL (a schema of the run's own).

Per round: kill -9 the worker leading the dyno manager, then
- lead: until the other worker's log says it leads the dyno manager,
- scale: `PATCH formation web=N+1` (sent at the kill) until the new dyno is up in GET /dynos,
- requests: GET / through the router every 20 ms from 1 s before the kill to 5 s after
  (the dynos keep running: failed ones show what the takeover costs the app's users).
Then a build: kill -9 the worker running it (its build sleeps 8 s in bin/pre_compile) and time
until the other worker has started it again and until it succeeded.

    python bench/worker_takeover.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

REPO = Path(__file__).resolve().parent.parent
SHELL_APP = REPO / "tests" / "fixtures" / "apps" / "shell-app"
DEFAULT_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Role:
    def __init__(self, root: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name, self.args = name, args
        self.home = root / f"home-{name}"
        self.env = {**env, "WAKA_HOME": str(self.home)}
        self.log_path = root / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.offset = 0

    def start(self) -> None:
        """Start it; `log()` shows this run's output from now on."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "waka", *self.args],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")


def until(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise SystemExit(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - began


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def push(app_dir: Path, url: str) -> subprocess.Popen[bytes]:
    git("init", "-q", "-b", "main", cwd=app_dir)
    git("add", "-A", cwd=app_dir)
    git("-c", "user.email=b@example.com", "-c", "user.name=b", "commit", "-qm", "app", cwd=app_dir)
    return subprocess.Popen(
        ["git", "push", "-q", url, "main"],
        cwd=app_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("WAKA_TEST_DATABASE_URL") or DEFAULT_URL
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    from eventsourcing.cipher import AESCipher

    root = Path(tempfile.mkdtemp(prefix="waka-takeover-"))
    env = {
        **os.environ,
        "WAKA_DATABASE_URL": url,
        "WAKA_DATABASE_SCHEMA": schema,
        "WAKA_CIPHER_KEY": AESCipher.create_key(num_bytes=32),
        "PYTHONUNBUFFERED": "1",
    }
    api_port, router_port = free_port(), free_port()
    api = Role(
        root,
        "api",
        ["api", "--port", str(api_port), "--tls-port", "0", "--rendezvous-port", str(free_port())],
        env,
    )
    router = Role(root, "router", ["router", "--port", str(router_port), "--tls-port", "0"], env)
    workers = [Role(root, f"worker-{n}", ["worker"], env) for n in (1, 2)]
    roles = [api, router, *workers]
    results: dict[str, list[float]] = {"lead": [], "scale": [], "failed": [], "sent": []}
    build: dict[str, float] = {}
    try:
        for role in roles:
            role.start()
        key = (
            subprocess.run(
                [sys.executable, "-m", "waka", "users:create", "bench@example.com"],
                cwd=REPO,
                env={**env, "WAKA_HOME": str(api.home)},
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={
                "Accept": "application/vnd.heroku+json; version=3",
                "Authorization": f"Bearer {key}",
            },
            timeout=30,
        )
        until(lambda: _answers(client), 60, "the API answers")
        client.post("/apps", json={"name": "takeover"}).raise_for_status()
        app_dir = root / "app"
        shutil.copytree(SHELL_APP, app_dir)
        git_url = f"http://bench:{key}@127.0.0.1:{api_port}/takeover.git"
        if push(app_dir, git_url).wait(timeout=300) != 0:
            raise SystemExit("the push failed")
        web = httpx.Client(
            base_url=f"http://127.0.0.1:{router_port}",
            headers={"Host": "takeover.localhost"},
            timeout=5,
        )
        until(lambda: _ok(web), 120, "the app serves through the router")
        quantity = 1
        for round_ in range(args.rounds):
            leader = _leader(workers)
            other = workers[1] if leader is workers[0] else workers[0]
            leads_before = other.log().count("dyno-manager: leading")
            load = Load(web)
            time.sleep(1.0)
            leader.kill()
            killed = time.monotonic()
            quantity += 1
            client.patch(
                "/apps/takeover/formation",
                json={"updates": [{"type": "web", "quantity": quantity}]},
            )
            until(
                lambda o=other, n=leads_before: o.log().count("dyno-manager: leading") > n,
                30,
                "the other worker leads",
            )
            lead = time.monotonic() - killed
            until(lambda q=quantity: _up(client) == q, 60, "the scale after the kill")
            scale = time.monotonic() - killed
            time.sleep(max(0.0, 5.0 - (time.monotonic() - killed)))
            failed, sent = load.stop()
            results["scale"].append(scale)
            results["lead"].append(lead)
            results["failed"].append(failed)
            results["sent"].append(sent)
            say(f"round {round_ + 1}: scale {scale:.2f} s, failed {failed}/{sent}")
            leader.start()  # back as a standby
            time.sleep(2)
        build.update(_build_takeover(client, workers, root, git_url, api_port))
    finally:
        for role in roles:
            role.stop()
        _remove_dynos(env)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        shutil.rmtree(root, ignore_errors=True)
    print("\n".join(describe(url)))
    print()
    print("| what | median | max | runs |")
    print("|---|---|---|---|")
    print(_row("kill -9 of the leading worker → the other leads the dyno manager", results["lead"]))
    print(_row("kill -9 → a scale sent at the kill has its new dyno up", results["scale"]))
    failed = sum(results["failed"])
    print(
        f"| requests through the router failed around the kill | {failed} of "
        f"{int(sum(results['sent']))} | | {args.rounds} |"
    )
    if build:
        print(
            f"| kill -9 of the worker building → the other starts it again | "
            f"{build['restart']:.2f} s | | 1 |"
        )
        print(
            f"| kill -9 of the worker building → the build succeeded (8 s build) | "
            f"{build['done']:.2f} s | | 1 |"
        )
    return 0


def _row(what: str, values: list[float]) -> str:
    return f"| {what} | {statistics.median(values):.2f} s | {max(values):.2f} s | {len(values)} |"


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/account").status_code == 200
    except httpx.HTTPError:
        return False


def _ok(web: httpx.Client) -> bool:
    try:
        return web.get("/").status_code == 200
    except httpx.HTTPError:
        return False


def _up(client: httpx.Client) -> int:
    return sum(d["state"] == "up" for d in client.get("/apps/takeover/dynos").json())


def _leader(workers: list[Role]) -> Role:
    until(lambda: any(w.process for w in workers), 5, "a worker runs")

    def last_lead(w: Role) -> int:
        return w.log().rfind("dyno-manager: leading") if w.process is not None else -1

    # The leader is the running worker whose last word about the dyno manager is "leading".
    leading = [
        w
        for w in workers
        if w.process is not None
        and last_lead(w) > w.log().rfind("dyno-manager: standing by")
        and last_lead(w) >= 0
    ]
    if len(leading) != 1:
        raise SystemExit("no single leader:\n" + "\n".join(w.log()[-2000:] for w in workers))
    return leading[0]


class Load:
    """GET / through the router every 20 ms until stopped; counts what failed."""

    def __init__(self, web: httpx.Client) -> None:
        self.web = web
        self.failed = self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            if not _ok(self.web):
                self.failed += 1
            time.sleep(0.02)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.failed, self.sent


def _build_takeover(
    client: httpx.Client, workers: list[Role], root: Path, url: str, api_port: int
) -> dict[str, float]:
    """Push an app whose build takes 8 s; kill the worker that starts it."""
    client.post("/apps", json={"name": "takeover-build"}).raise_for_status()
    app_dir = root / "slow-app"
    app_dir.mkdir()
    (app_dir / "requirements.txt").write_text("")
    (app_dir / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    (app_dir / "bin").mkdir()
    (app_dir / "bin" / "pre_compile").write_text("#!/bin/sh\nsleep 8\n")
    (app_dir / "bin" / "pre_compile").chmod(0o755)
    marks = {w.name: w.log().count("started here") for w in workers}
    pusher = push(app_dir, url.replace("/takeover.git", "/takeover-build.git"))

    def builder() -> Role | None:
        for w in workers:
            if w.log().count("started here") > marks[w.name]:
                return w
        return None

    until(lambda: builder() is not None, 120, "a worker starts the build")
    time.sleep(2)  # well inside the build
    running = builder()
    assert running is not None
    other = workers[1] if running is workers[0] else workers[0]
    marks[other.name] = other.log().count("started here")
    running.kill()
    killed = time.monotonic()
    restart = until(
        lambda: other.log().count("started here") > marks[other.name],
        60,
        "the other worker starts the build again",
    )

    def succeeded() -> bool:
        builds = client.get("/apps/takeover-build/builds").json()
        return bool(builds) and builds[-1]["status"] == "succeeded"

    until(succeeded, 180, "the build succeeds")
    done = time.monotonic() - killed
    pusher.wait(timeout=60)
    running.start()
    return {"restart": restart, "done": done}


def _remove_dynos(env: dict[str, str]) -> None:
    from waka.adapters.runtime import docker_client
    from waka.config import Settings

    client = docker_client()
    if client is None:
        return
    platform = Settings.from_env(env).platform_id
    for container in client.containers.list(
        all=True, filters={"label": f"waka.platform={platform}"}
    ):
        container.remove(force=True)


if __name__ == "__main__":
    raise SystemExit(main())
