"""Wall time of a whole `git push` until the new release is current, cold and warm cache.

Starts a real `waka up` (builds in Docker containers of the stack image when there is one),
pushes the sample Python app (tests/fixtures/apps/python-web: one dependency from PyPI) with
the real git client, and reads where the time went from the builder's phase line in the server
log: source (fetch + safe extract), compile (detect + compile + release, in one container),
slug, release phase, record (ledger). "receive + queue" is the rest: git's transfer, the hook's
export of the commit and the wait for the builder.

    python bench/push_time.py [--quick] [--warm N]
"""

from __future__ import annotations

import argparse
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "fixtures" / "apps" / "python-web"
PHASES = ("source", "compile", "slug", "release_phase", "record")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def git(repo: Path, *args: str) -> str:
    return run(
        "git", "-c", "user.email=bench@example.com", "-c", "user.name=bench", *args, cwd=repo
    )


def start_waka(
    home: Path, port: int, router_port: int, **settings: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`waka up` on WAKA_HOME=home/waka (output in home/up.log), and a user's API key."""
    env = {**os.environ, "WAKA_HOME": str(home / "waka"), **settings}
    key = (
        run(sys.executable, "-m", "waka", "users:create", "bench@example.com", env=env)
        .strip()
        .splitlines()[-1]
    )
    command = ["waka", "up", "--api-port", str(port), "--router-port", str(router_port)]
    server = subprocess.Popen(
        [sys.executable, "-m", *command],
        env=env,
        stdout=(home / "up.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    return server, key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one warm push only")
    parser.add_argument("--warm", type=int, default=5, help="warm pushes to take the median of")
    args = parser.parse_args()
    warm_runs = 1 if args.quick else args.warm

    home = Path(tempfile.mkdtemp(prefix="waka-bench-push-"))
    port = free_port()
    log_path = home / "up.log"
    server, key = start_waka(home, port, free_port())
    try:
        wait_for(port)
        request(port, key, "POST", "/apps", b'{"name": "bench-push"}')
        repo = home / "app"
        shutil.copytree(SAMPLE, repo)
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "first")
        url = f"http://bench:{key}@localhost:{port}/bench-push.git"
        runtime = "docker" if "Docker containers" in log_path.read_text() else "host processes"

        rows = [("cold cache", *push(repo, url, log_path))]
        warm = []
        for n in range(warm_runs):
            (repo / "app.py").write_text((repo / "app.py").read_text() + f"\n# change {n}\n")
            git(repo, "commit", "-qam", f"change {n}")
            warm.append(push(repo, url, log_path))
        median = sorted(warm, key=lambda r: r[0])[len(warm) // 2]
        rows.append((f"warm cache (median of {len(warm)})", *median))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    print(f"git push of the sample Python app until its release is current (builds: {runtime})")
    header = ["push", "wall", "receive+queue", *PHASES]
    print("  ".join(f"{h:>14}" for h in header))
    for label, wall, phases in rows:
        builder = sum(phases.values())
        cells = [
            label,
            f"{wall:.2f}s",
            f"{wall - builder:.2f}s",
            *(f"{phases.get(p, 0.0):.2f}s" for p in PHASES),
        ]
        print("  ".join(f"{c:>14}" for c in cells))
    if len(warm) > 1:
        print(
            f"warm pushes: min {min(w for w, _ in warm):.2f}s, "
            f"max {max(w for w, _ in warm):.2f}s, "
            f"stdev {statistics.pstdev(w for w, _ in warm):.2f}s"
        )
    return 0


def push(repo: Path, url: str, log_path: Path) -> tuple[float, dict[str, float]]:
    seen = log_path.read_text().count("waka.builder build ")
    started = time.monotonic()
    output = git(repo, "push", "-q", url, "main")
    wall = time.monotonic() - started
    if "Verifying deploy... done." not in output:
        raise SystemExit(f"push failed:\n{output}")
    for _ in range(50):  # the phase line is logged as the build ends
        lines = [ln for ln in log_path.read_text().splitlines() if "waka.builder build " in ln]
        if len(lines) > seen:
            break
        time.sleep(0.1)
    phases = {name: float(value) for name, value in re.findall(r"(\w+)=([\d.]+)s", lines[-1])}
    phases.pop("total", None)
    return wall, phases


def request(port: int, key: str, method: str, path: str, body: bytes | None = None) -> bytes:
    req = urllib.request.Request(
        f"http://localhost:{port}{path}",
        data=body,
        method=method,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/vnd.heroku+json; version=3",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        return response.read()


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("waka up did not start")


if __name__ == "__main__":
    sys.exit(main())
