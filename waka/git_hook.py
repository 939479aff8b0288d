"""The pre-receive hook of every app's repository: a push is a build.

git runs it with the pushed refs on stdin, before it updates them. It exports the pushed
commit as a source tarball, requests a build, relays the build's output (git shows it as
`remote:` lines) and rejects the push unless the build and its release succeed, so a failed
build changes nothing.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

from waka.bootstrap import bootstrap
from waka.config import Settings
from waka.projections.builds import build_by_id
from waka.projections.releases import find_release

ZERO = "0" * 40
EXPECT = Path("waka-push.expect")  # in the repository, the hooks' working directory
BRANCHES = ("refs/heads/main", "refs/heads/master")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main() -> int:
    updates = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    for _old, new, ref in updates:
        if ref not in BRANCHES:
            say(f" !     Pushing to {ref} is not supported: push to main or master,")
            say(" !     e.g. `git push heroku HEAD:main`.")
            return 1
        if new == ZERO:
            say(f" !     Deleting {ref} is not allowed.")
            return 1
    if len(updates) != 1:
        say(" !     Push one branch at a time (main or master).")
        return 1
    old, new, ref = updates[0]

    # One push per app at a time: a second one is refused clearly, never interleaved.
    lock = open("waka-push.lock", "w")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(" !     Another push to this app is being built. Wait for it, then push again.")
        return 1
    if not based_on_current(old, ref):
        say(" !     The branch moved while you pushed. Fetch, merge and push again.")
        return 1

    settings = Settings.from_env()
    platform = bootstrap(settings)
    app_id = UUID(os.environ["WAKA_GIT_APP_ID"])
    actor = {"id": os.environ["WAKA_GIT_USER_ID"], "email": os.environ["WAKA_GIT_USER_EMAIL"]}

    token = platform.sources.new_token()
    with platform.sources.upload(token) as sink:
        archive = subprocess.Popen(
            ["git", "archive", "--format=tar.gz", new], stdout=subprocess.PIPE
        )
        assert archive.stdout is not None
        while chunk := archive.stdout.read(1 << 16):
            sink.write(chunk)
        if archive.wait() != 0:
            say(" !     Could not read the pushed commit.")
            return 1

    build_id = platform.ledger.request_build(
        actor, app_id, f"{settings.api_url}/sources/{token}", new
    )

    def finished() -> bool:
        platform.projector.catch_up()
        build = build_by_id(platform.store, build_id)
        return build is None or build["status"] != "pending"

    for chunk in platform.build_logs.follow(build_id, finished):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()

    build = build_by_id(platform.store, build_id)
    if build is None or build["status"] != "succeeded":
        return 1
    release = find_release(platform.store, str(app_id), str(build["release_version"]))
    if release is None or release["status"] != "succeeded":
        return 1
    say("Verifying deploy... done.")
    # git updates the branch after this hook ends; the next push waits to see that happen.
    EXPECT.write_text(f"{ref} {new}\n")
    return 0


def based_on_current(old: str, ref: str) -> bool:
    """Is `old` (what this push replaces) still the branch's value? git checks that too, but
    only after the hook, when the build would already be released."""
    if EXPECT.exists():  # the previous push succeeded: wait for git to apply its update
        expected_ref, _, expected = EXPECT.read_text().strip().partition(" ")
        deadline = time.monotonic() + 10
        while rev_parse(expected_ref) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
    return rev_parse(ref) == old


def rev_parse(ref: str) -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", ref], capture_output=True, text=True
    )
    return found.stdout.strip() if found.returncode == 0 else ZERO


def post_receive() -> int:
    """After git updated the branch: the previous push is complete."""
    EXPECT.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(post_receive() if sys.argv[1:] == ["post-receive"] else main())
