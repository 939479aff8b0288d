"""Dynos on a real Swarm of several nodes (tests/swarm_cluster.py: privileged containers with
their own Docker engine), driven by `waka up` with WAKA_RUNTIME=swarm, over its HTTP API:

- `ps:scale web=1→10`: from the formation PATCH until 10 web dynos are up and the router has
  served each of them;
- a release (a config var set) until all 10 dynos are of the new release and up;
- a node lost (its container killed) until its dynos are up on the others and routed, and how
  many requests failed meanwhile (one client sending requests back to back through the router).

Run: python bench/swarm_dynos.py [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe

from tests.e2e.conftest import app_repo, find_heroku_cli, git_url, start_server
from tests.swarm_cluster import SwarmCluster


def web_up(api: httpx.Client, app: str) -> list[dict[str, Any]]:
    found = api.get(f"/apps/{app}/dynos?extended=true").json()
    return [d for d in found if d["type"] == "web" and d["state"] == "up"]


def until(check: Any, timeout: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError("not reached")


def served_by_all(router: str, app: str, count: int) -> bool:
    seen = set()
    with httpx.Client(timeout=10) as client:
        for _ in range(count * 6):
            response = client.get(router, headers={"Host": f"{app}.localhost"})
            if response.status_code == 200:
                seen.add(response.json()["dyno"])
    return len(seen) == count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print("\n".join(describe()))
    heroku_cli, _ = find_heroku_cli()
    assert heroku_cli is not None, "the Heroku CLI is not installed (scripts/test-deps)"
    started = time.monotonic()
    cluster = SwarmCluster.start(workers=args.workers)
    print(f"cluster of {args.workers + 1} nodes up in {time.monotonic() - started:.1f} s")
    tmp = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    server = start_server(tmp, heroku_cli, env=cluster.waka_env())
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{server.port}",
        headers={
            "Authorization": f"Bearer {server.api_key}",
            "Accept": "application/vnd.heroku+json; version=3",
        },
        timeout=60,
    )
    router = f"http://127.0.0.1:{server.router_port}/"
    try:
        app = api.post("/apps", json={"name": f"bench-{os.getpid()}"}).json()["name"]
        repo = app_repo("env-web", tmp / app)
        pushed = repo.push(git_url(server, app))
        assert pushed.returncode == 0, pushed.output
        until(lambda: len(web_up(api, app)) == 1)

        t0 = time.monotonic()
        api.patch(f"/apps/{app}/formation/web", json={"quantity": 10}).raise_for_status()
        until(lambda: len(web_up(api, app)) == 10)
        until(lambda: served_by_all(router, app, 10))
        scale = time.monotonic() - t0
        nodes = Counter(d["extended"]["instance"] for d in web_up(api, app))
        print(f"ps:scale web=1→10: {scale:.1f} s; dynos per node {dict(nodes)}")

        version = api.get(f"/apps/{app}/releases", headers={"Range": "version ..; order=desc"})
        current = version.json()[0]["version"]
        t0 = time.monotonic()
        api.patch(f"/apps/{app}/config-vars", json={"BENCH": str(t0)}).raise_for_status()
        until(
            lambda: (
                len(found := web_up(api, app)) == 10
                and all(d["release"]["version"] > current for d in found)
            )
        )
        print(f"release replacing 10 dynos on {len(nodes)} nodes: {time.monotonic() - t0:.1f} s")

        failed: list[str] = []
        sent = Counter[str]()
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    try:
                        response = client.get(router, headers={"Host": f"{app}.localhost"})
                        sent[str(response.status_code)] += 1
                        if response.status_code != 200:
                            failed.append(str(response.status_code))
                    except httpx.HTTPError as error:
                        sent["error"] += 1
                        failed.append(type(error).__name__)

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(2)
        on_nodes = Counter(d["extended"]["instance"] for d in web_up(api, app))
        workers = {n.name for n in cluster.nodes() if n.role == "worker"}
        victim = max((n for n in on_nodes if n in workers), key=lambda n: on_nodes[n])
        t0 = time.monotonic()
        cluster.kill(victim)
        until(
            lambda: (
                len(found := web_up(api, app)) == 10
                and all(d["extended"]["instance"] != victim for d in found)
            )
        )
        until(lambda: served_by_all(router, app, 10))
        lost = time.monotonic() - t0
        time.sleep(2)
        stop.set()
        thread.join()
        print(
            f"node {victim} lost with {on_nodes[victim]} of 10 dynos: all 10 serving again after "
            f"{lost:.1f} s; requests {dict(sent)}, failed {len(failed)} ({Counter(failed)})"
        )
        session = api.post(f"/apps/{app}/log-sessions", json={"lines": 1500}).json()
        lines = httpx.get(session["logplex_url"], timeout=30).text.splitlines()
        for line in lines:
            if "at=error" in line:
                print("  router:", line.split("heroku[router]: ", 1)[-1])
    finally:
        api.close()
        try:
            server.stop_cleanly()
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
