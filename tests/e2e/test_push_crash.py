"""A crash of `waka up` (kill -9) while a pushed app builds.

It used to take the platform down: the hook and git inherited the API's listening socket and
waited for a build only a running waka could finish, so waka could not listen again. Now the
push's processes hold no socket of waka's and give up when waka is gone; the restarted
builder finishes the build, the branch follows the release, the crashed build's container and
work directory are swept, and pushing the same commit again makes no second release.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from waka.adapters.runtime import docker_client

from .conftest import Api, GitRepo, WakaServer, app_repo, git_url, wait_for
from .processes import git_processes, listening_inodes, sockets_of, wait_until_git_ends
from .test_git_push import deployed, remote_head
from .test_push_sizes import MB, half_a_push, random_file

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

MARKER = "slow build started"


def slow_buildpack(path: Path, seconds: int) -> Path:
    """A v2 buildpack whose compile takes `seconds`."""
    (path / "bin").mkdir(parents=True)
    scripts = {
        "detect": "#!/bin/sh\necho Slow\n",
        "compile": f"#!/bin/sh\necho '-----> {MARKER}'\nsleep {seconds}\necho '       done'\n",
        "release": "#!/bin/sh\nprintf -- '---\\naddons: []\\n'\n",
    }
    for name, text in scripts.items():
        (path / "bin" / name).write_text(text)
        (path / "bin" / name).chmod(0o755)
    return path


def build_containers(build_id: str) -> list[str]:
    client = docker_client()
    assert client is not None, "no Docker engine"
    mine = {"label": f"waka.build={build_id}"}
    return [c.id for c in client.containers.list(all=True, filters=mine, sparse=True)]


def start_slow_push(
    server: WakaServer, tmp_path: Path, seconds: int
) -> tuple[str, GitRepo, str, subprocess.Popen[str]]:
    """An app with a slow buildpack and a push of it under way: (app, repo, build id, the
    `git push` process)."""
    api = Api(server)
    app = api.create_app("crash")
    buildpack = str(slow_buildpack(tmp_path / "slow-buildpack", seconds))
    api.request(
        "PUT",
        f"/apps/{app}/buildpack-installations",
        json={"updates": [{"buildpack": buildpack}]},
    )
    repo = app_repo("shell-app", tmp_path / "app")
    push = repo.popen("push", git_url(server, app), "main")

    def building() -> str | None:
        builds = api.builds(app)
        if not builds:
            return None
        log = server.home / "builds" / f"{builds[0]['id']}.log"
        return builds[0]["id"] if log.exists() and MARKER in log.read_text() else None

    build_id = wait_for(building, timeout=120, what="the build to start")
    api.close()
    return app, repo, build_id, push


def test_a_crash_mid_build_leaves_the_port_free_and_the_push_completes_after_restart(
    make_waka, tmp_path: Path
) -> None:
    server: WakaServer = make_waka()
    app, repo, build_id, push = start_slow_push(server, tmp_path, seconds=8)
    sha = repo.head()

    # While it builds: the push's processes (git, the hook) hold none of waka's sockets.
    listening = listening_inodes(server.port) | listening_inodes(server.router_port)
    assert listening, "found no listening socket of waka's"
    pushing = git_processes(server.home)
    assert any("git_hook" in command for command in pushing.values()), pushing
    for pid, command in pushing.items():
        assert not sockets_of(pid) & listening, f"{command} holds waka's listening socket"

    server.crash()
    output, _ = push.communicate(timeout=60)
    assert push.returncode != 0, output  # the pusher saw the connection go
    # The hook gives up at once (it would wait forever for a build nobody runs), and all
    # of git goes with it.
    wait_until_git_ends(server.home, timeout=15)
    assert build_containers(build_id), "the crashed build's container has no waka.build label"

    server.start(same_ports=True)  # the port is free: nothing of the old waka holds it
    api = Api(server)
    # The restarted builder runs the pending build again, releases it, and the branch follows.
    wait_for(lambda: api.current_release(app)["version"] == 2, timeout=120, what="v2")
    wait_for(lambda: remote_head(repo, git_url(server, app)) == sha, timeout=30, what="branch")
    assert [b["status"] for b in api.builds(app)] == ["succeeded"]
    # The crashed run's container and work directory are gone, and so is the re-run's.
    wait_for(lambda: not build_containers(build_id), timeout=30, what="the containers to go")
    assert list((server.home / "work").iterdir()) == []

    # Pushing the same commit again: nothing to do, no second release.
    again = repo.push(git_url(server, app))
    assert again.returncode == 0, again.output
    assert "Everything up-to-date" in again.output
    assert [r["version"] for r in api.releases(app)] == [1, 2]
    api.close()


def test_a_re_push_after_a_crash_follows_the_build_under_way(make_waka, tmp_path: Path) -> None:
    server: WakaServer = make_waka()
    app, repo, build_id, push = start_slow_push(server, tmp_path, seconds=10)
    server.crash()
    push.communicate(timeout=60)
    wait_until_git_ends(server.home, timeout=15)

    server.start(same_ports=True)
    api = Api(server)
    # The user pushes the same commit again while the restarted build runs: it is followed,
    # not built twice.
    time.sleep(1)
    pushed = repo.push(git_url(server, app))
    deployed(pushed, 2)
    assert "A build of this commit is already under way" in pushed.output
    assert [b["id"] for b in api.builds(app)] == [build_id]
    assert [r["version"] for r in api.releases(app)] == [1, 2]
    assert remote_head(repo, git_url(server, app)) == repo.head()
    api.close()


def test_a_crash_while_the_pack_arrives_leaves_no_git_behind(make_waka, tmp_path: Path) -> None:
    server: WakaServer = make_waka()
    api = Api(server)
    app = api.create_app("crash-upload")
    repo = app_repo("static-site", tmp_path / "app")
    random_file(repo.path / "blob.bin", 20 * MB)
    sha = repo.commit_all("20 MB")
    with half_a_push(server, app, repo, sha):
        server.crash()  # waka dies with half the pack received
        # git sees the body end (EOF) and gives up; none of it spins on, waiting.
        wait_until_git_ends(server.home, timeout=15)
    api.close()

    server.start(same_ports=True)
    api = Api(server)
    url = git_url(server, app)
    assert remote_head(repo, url) is None
    assert api.builds(app) == []
    deployed(repo.push(url), 2)
    assert remote_head(repo, url) == sha
    api.close()
