"""Push throughput: MB/s of `git push` through waka's smart HTTP, for incompressible data.

Starts a real `waka up`, makes repositories holding N MB of random bytes (nothing compresses
them), and times the real git client:
- transfer: a push to another branch, which waka's pre-receive hook refuses only after git
  has received and indexed the whole pack, so it measures HTTP + git http-backend + receive-pack
  (the median of --runs pushes of the same commit; a refused push stores nothing);
- deploy: the same commit pushed to main until its release is current (transfer, the hook's
  export, the build of a static site holding the data, the slug, the release);
- local git: the same push into a bare repository on disk (file://), git's own floor.

    python bench/push_throughput.py [--quick] [--sizes 10,50] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe
from push_time import free_port, git, request, start_waka, wait_for
from report import print_table

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "tests" / "fixtures" / "apps" / "static-site"
MB = 1024 * 1024


def make_repo(path: Path, megabytes: int) -> None:
    shutil.copytree(SITE, path)
    with (path / "blob.bin").open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(MB))
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", f"{megabytes} MB")


def timed_push(repo: Path, url: str, refspec: str, expect_ok: bool) -> float:
    started = time.monotonic()
    done = subprocess.run(
        ["git", "push", "-q", url, refspec], cwd=repo, capture_output=True, text=True
    )
    elapsed = time.monotonic() - started
    if (done.returncode == 0) != expect_ok:
        raise SystemExit(f"git push {refspec}: unexpected result\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 MB only, one run")
    parser.add_argument("--sizes", default="10,50", help="repository sizes in MB")
    parser.add_argument("--runs", type=int, default=3, help="transfer pushes per size")
    args = parser.parse_args()
    sizes = [10] if args.quick else [int(s) for s in args.sizes.split(",")]
    runs = 1 if args.quick else args.runs

    home = Path(tempfile.mkdtemp(prefix="waka-bench-throughput-"))
    port = free_port()
    server, key = start_waka(home, port, free_port())
    rows = []
    try:
        wait_for(port)
        for size in sizes:
            app = f"bench-{size}mb"
            request(port, key, "POST", "/apps", f'{{"name": "{app}"}}'.encode())
            repo = home / app
            make_repo(repo, size)
            url = f"http://bench:{key}@localhost:{port}/{app}.git"
            transfer = statistics.median(
                timed_push(repo, url, "main:refs/heads/transfer", expect_ok=False)
                for _ in range(runs)
            )
            deploy = timed_push(repo, url, "main", expect_ok=True)
            bare = home / f"{app}-bare.git"
            git(home, "init", "-q", "--bare", str(bare))
            local = timed_push(repo, f"file://{bare}", "main", expect_ok=True)
            rows.append(
                [
                    f"{size} MB",
                    f"{transfer:.2f}s",
                    f"{size / transfer:.1f}",
                    f"{deploy:.2f}s",
                    f"{size / deploy:.1f}",
                    f"{local:.2f}s",
                    f"{size / local:.1f}",
                ]
            )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    for line in describe():
        print(line)
    print(f"git push of random (incompressible) data; transfer: median of {runs}")
    header = ["size", "transfer", "MB/s", "deploy", "MB/s", "local git", "MB/s"]
    print_table(header, rows, numeric=set(range(1, 7)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
