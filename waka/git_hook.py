"""The pre-receive hook of every app's repository: a push is a build.

git runs it with the pushed refs on stdin, before it updates them. It exports the pushed
commit as a source tarball, requests a build, relays the build's output (git shows it as
`remote:` lines) and rejects the push unless the build and its release succeed, so a failed
build changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from uuid import UUID, uuid4

from waka.adapters import processes
from waka.adapters.cipher_key import CipherKeyError
from waka.adapters.git_repos import GitRepos
from waka.bootstrap import Platform, bootstrap
from waka.config import Settings
from waka.projections.apps import find_app
from waka.projections.builds import build_by_id, find_slug, pending_build_of_commit
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

    settings = Settings.from_env()
    platform = bootstrap(settings)
    repos = platform.git_repos
    repo = Path.cwd()  # git runs its hooks in the repository
    # One push per app at a time (across API processes where they share PostgreSQL): a
    # second one is refused clearly, never interleaved.
    lock = repos.try_push_lock(repo)  # held until this process exits
    if lock is None:
        say(" !     Another push to this app is being built. Wait for it, then push again.")
        return 1
    if not based_on_current(old, ref) or not repos.based_on_branch(repo, ref, old):
        say(" !     The branch moved while you pushed. Fetch, merge and push again.")
        return 1

    app_id = UUID(os.environ["WAKA_GIT_APP_ID"])
    actor = {"id": os.environ["WAKA_GIT_USER_ID"], "email": os.environ["WAKA_GIT_USER_EMAIL"]}

    platform.projector.catch_up()
    if released_commit(platform, str(app_id)) == new:
        # Its build was released after the push that sent it was cut off (a restart).
        say(f"-----> {new[:7]} is already released: nothing to build.")
        return accept(repos, repo, ref, new)
    earlier = pending_build_of_commit(platform.store, str(app_id), new)
    if earlier is not None:
        build_id = earlier["id"]  # a build of this commit is under way: follow it
        repos.record_push(repo, build_id, ref, old, new)
        say("-----> A build of this commit is already under way; following it.")
    else:
        build_id = str(uuid4())
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
        # Recorded first: if the platform stops from here on, the branch catches up with the
        # release the builder makes after the restart (waka/adapters/git_repos.py).
        repos.record_push(repo, build_id, ref, old, new)
        platform.ledger.request_build(
            actor, app_id, f"{settings.api_url}/sources/{token}", new, build_id=build_id
        )
    platform_process = os.environ.get("WAKA_PLATFORM_PROCESS", "")

    def finished() -> bool:
        if platform_process and not processes.alive(platform_process):
            raise PlatformGone
        platform.projector.catch_up()
        build = build_by_id(platform.store, build_id)
        return build is None or build["status"] != "pending"

    try:
        for chunk in platform.build_logs.follow(build_id, finished):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    except PlatformGone:
        repos.keep_pushed_objects(repo)  # for the branch to move when the build is released
        say(" !     waka stopped while this push was building, so the push is not applied now.")
        say(" !     The build finishes when waka is back, and then your branch is updated;")
        say(" !     see `heroku releases`. Pushing the same commit again makes no second release.")
        return 1

    repos.forget_push(repo, build_id)  # git gets the branch update back from here
    build = build_by_id(platform.store, build_id)
    if build is None or build["status"] != "succeeded":
        return 1
    release = find_release(platform.store, str(app_id), str(build["release_version"]))
    if release is None or release["status"] != "succeeded":
        return 1
    say("Verifying deploy... done.")
    return accept(repos, repo, ref, new)


def accept(repos: GitRepos, repo: Path, ref: str, new: str) -> int:
    """Say yes: git updates the branch after this hook ends. The next push (and a copy
    brought up to date here) waits to see that happen; a shared canonical copy has the new
    branch before this hook ends, while it still holds the push lock."""
    EXPECT.write_text(f"{ref} {new}\n")
    try:
        repos.publish(repo, ref, new)
    except BaseException:
        EXPECT.unlink(missing_ok=True)
        raise
    return 0


class PlatformGone(Exception):
    """The waka process that serves this push is no longer running."""


def released_commit(platform: Platform, app_id: str) -> str | None:
    """The commit the app's current release runs, if it came from git."""
    app = find_app(platform.store, app_id)
    slug = find_slug(platform.store, app_id, app["slug_id"]) if app and app["slug_id"] else None
    return slug["commit_sha"] if slug else None


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


def run_hook() -> int:
    """main(), with any failure told to the pusher in one line (git shows the hook's output):
    the traceback goes to $WAKA_HOME/logs/git-hook.log, for the operator, never to the user."""
    try:
        return main()
    except CipherKeyError as error:
        say(f" !     waka cannot open its ledger: {error}")
    except Exception:
        home = Path(os.environ.get("WAKA_HOME", "."))
        with contextlib.suppress(OSError):
            (home / "logs").mkdir(mode=0o700, exist_ok=True)
            with open(home / "logs" / "git-hook.log", "a") as log:
                log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} push failed\n")
                log.write(traceback.format_exc())
        say(" !     Internal error while taking this push; the operator's log has the details.")
    return 1


if __name__ == "__main__":
    sys.exit(post_receive() if sys.argv[1:] == ["post-receive"] else run_hook())
