"""How long the run side takes to converge, measured through the API and the router:

- `ps:scale web=10` until ten web dynos are up (from one),
- a rollback until the router serves the old release's response,
- waking a sleeping eco app: the first request's wall time.

Starts a real `waka up` (Docker dynos of the stack image), pushes the sample Python app with
the real git client, and drives it over HTTP.

    python bench/run_times.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_time import SAMPLE, free_port, git, request, start_waka, wait_for


class Api:
    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key

    def call(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        raw = request(self.port, self.key, method, path, data)
        return json.loads(raw) if raw else None

    def up(self, app: str) -> int:
        dynos = self.call("GET", f"/apps/{app}/dynos")
        assert isinstance(dynos, list)
        return sum(1 for d in dynos if d["type"] == "web" and d["state"] == "up")


def get(router_port: int, app: str) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{router_port}/", headers={"Host": f"{app}.localhost"}
    )
    try:
        with urllib.request.urlopen(req, timeout=90) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def until(check, timeout: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise SystemExit("timed out")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="scale to 3 instead of 10")
    args = parser.parse_args()
    scale_to = 3 if args.quick else 10

    home = Path(tempfile.mkdtemp(prefix="waka-bench-run-"))
    port, router_port = free_port(), free_port()
    server, key = start_waka(home, port, router_port, WAKA_SLEEP_AFTER="2")
    rows = []
    try:
        wait_for(port)
        api = Api(port, key)
        api.call("POST", "/apps", {"name": "bench-run"})
        repo = home / "app"
        shutil.copytree(SAMPLE, repo)
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "v2")
        url = f"http://bench:{key}@localhost:{port}/bench-run.git"
        git(repo, "push", "-q", url, "main")
        until(lambda: api.up("bench-run") == 1)

        started = time.monotonic()
        api.call(
            "PATCH",
            "/apps/bench-run/formation",
            {"updates": [{"type": "web", "quantity": scale_to}]},
        )
        until(lambda: api.up("bench-run") == scale_to)
        rows.append((f"ps:scale web=1 -> {scale_to}, all up", time.monotonic() - started))
        api.call(
            "PATCH", "/apps/bench-run/formation", {"updates": [{"type": "web", "quantity": 1}]}
        )
        until(
            lambda: api.up("bench-run") == 1 and len(api.call("GET", "/apps/bench-run/dynos")) == 1
        )

        app_py = repo / "app.py"
        app_py.write_text(app_py.read_text().replace("Hello from", "Howdy from"))
        git(repo, "commit", "-qam", "v3")
        git(repo, "push", "-q", url, "main")
        until(lambda: get(router_port, "bench-run")[1].startswith("Howdy"))
        started = time.monotonic()
        api.call("POST", "/apps/bench-run/releases", {"release": "2"})
        until(lambda: get(router_port, "bench-run")[1].startswith("Hello"))
        rows.append(("rollback until the old release serves", time.monotonic() - started))

        api.call(
            "PATCH",
            "/apps/bench-run/formation",
            {"updates": [{"type": "web", "quantity": 1, "size": "Eco"}]},
        )
        until(lambda: api.call("GET", "/apps/bench-run/dynos") == [], timeout=60)
        started = time.monotonic()
        status, _ = get(router_port, "bench-run")
        assert status == 200, status
        rows.append(("wake from sleep: first request", time.monotonic() - started))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        subprocess.run(
            [
                "docker",
                "rm",
                "-f",
                *subprocess.run(
                    ["docker", "ps", "-aq", "--filter", "label=waka.app_name=bench-run"],
                    capture_output=True,
                    text=True,
                ).stdout.split(),
            ],
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)

    print("| what | seconds |\n|---|--:|")
    for what, seconds in rows:
        print(f"| {what} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
