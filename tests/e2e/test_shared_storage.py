"""No process depends on another's local disk: two `waka api` processes and a `waka worker`,
each with a WAKA_HOME of its own, on one PostgreSQL. Real git over HTTP: a push through one
API copy is built by the worker, cloned through the other copy, pushed again through it, and
fetched back through the first; two pushes at once through the two copies never interleave.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from waka.adapters.git_repos import bundle_refs

from .conftest import (
    GIT_TIMEOUT,
    OWNER_EMAIL,
    Api,
    GitRepo,
    WakaServer,
    app_repo,
    git_url,
    wait_for,
)
from .roles import Role
from .test_git_push import deployed, remote_head
from .test_push_crash import slow_buildpack

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture
def platform(tmp_path: Path, pg_schema_url: tuple[str, str]) -> Iterator[tuple[Role, Role, Role]]:
    """API copies A and B and one worker, three homes, one database."""
    url, schema = pg_schema_url
    roles = (
        Role(tmp_path / "home-a", "api", url, schema),
        Role(tmp_path / "home-b", "api", url, schema),
        Role(tmp_path / "home-w", "worker", url, schema),
    )
    try:
        for role in roles:
            role.start()
        key = roles[0].create_user(OWNER_EMAIL)
        for role in roles:
            role.api_key = key
        yield roles
    finally:
        for role in roles:
            role.stop()
        WakaServer.remove_dynos(roles[2])  # type: ignore[arg-type] - the worker's dynos


def builds_ran_once(output: str) -> None:
    assert output.count("Building on the") == 1, output


def test_a_push_through_one_api_copy_is_cloned_and_pushed_through_another(
    platform: tuple[Role, Role, Role], tmp_path: Path
) -> None:
    a, b, worker = platform
    api_a, api_b = Api(a), Api(b)  # type: ignore[arg-type]
    app = api_a.create_app("shared-git")
    url_a, url_b = git_url(a, app), git_url(b, app)  # type: ignore[arg-type]

    repo = app_repo("shell-app", tmp_path / "app")
    pushed = repo.push(url_a)
    deployed(pushed, 2)  # the worker's build output reached A's hook, through the database

    # B has never seen this app: its copy comes from shared storage.
    assert not (b.home / "repos").exists() or not any((b.home / "repos").iterdir())
    repo.run("clone", "--quiet", url_b, str(tmp_path / "clone"))
    clone = GitRepo(tmp_path / "clone")
    assert clone.head() == repo.head()
    assert (clone.path / "Procfile").read_text() == (repo.path / "Procfile").read_text()

    # A second push, through B, fast-forwards; A then serves it.
    (clone.path / "more.txt").write_text("pushed through B\n")
    second = clone.commit_all("second, through B")
    deployed(clone.push(url_b), 3)
    assert remote_head(repo, url_a) == second
    assert remote_head(repo, url_b) == second
    repo.run("pull", "--quiet", "--ff-only", url_a, "main")
    assert repo.head() == second

    # Each build ran once, on the worker; the canonical copy is in the database.
    builds = api_b.builds(app)
    assert [b["status"] for b in builds] == ["succeeded", "succeeded"]
    for build in builds:
        output = httpx.get(build["output_stream_url"], timeout=30).text
        builds_ran_once(output)
        assert "Released v" in output
    assert not (a.home / "builds").exists() or not any((a.home / "builds").iterdir())
    assert (worker.home / "slugs").is_dir() and not (a.home / "slugs").exists()
    app_id = api_a.get(f"/apps/{app}")["id"]
    bundle = tmp_path / "canonical.bundle"
    with _database(a) as conn:
        row = conn.execute(
            "SELECT size FROM waka_blobs WHERE key = %s", (f"repos/{app_id}.bundle",)
        ).fetchone()
        assert row is not None and row[0] > 0
        chunks = conn.execute(
            "SELECT data FROM waka_blob_chunks c JOIN waka_blobs b USING (version) "
            "WHERE b.key = %s ORDER BY seq",
            (f"repos/{app_id}.bundle",),
        ).fetchall()
    bundle.write_bytes(b"".join(bytes(c[0]) for c in chunks))
    assert bundle_refs(bundle) == {"refs/heads/main": second}


def test_two_pushes_at_once_through_two_api_copies_do_not_interleave(
    platform: tuple[Role, Role, Role], tmp_path: Path
) -> None:
    a, b, _worker = platform
    api_a = Api(a)  # type: ignore[arg-type]
    app = api_a.create_app("shared-race")
    url_a, url_b = git_url(a, app), git_url(b, app)  # type: ignore[arg-type]
    base = app_repo("shell-app", tmp_path / "base")
    deployed(base.push(url_a), 2)

    clones = []
    for name in ("alice", "bob"):
        base.run("clone", "--quiet", url_a, str(tmp_path / name))
        clone = GitRepo(tmp_path / name)
        (clone.path / f"{name}.txt").write_text(f"{name} was here\n")
        clone.commit_all(f"{name}'s change")
        clones.append(clone)

    slow = str(slow_buildpack(tmp_path / "slow-buildpack", 8))  # alice's build takes 8 s
    api_a.request(
        "PUT", f"/apps/{app}/buildpack-installations", json={"updates": [{"buildpack": slow}]}
    )
    first = clones[0].popen("push", url_a, "main")
    deadline = time.monotonic() + 120
    while len(api_a.builds(app)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # alice's build is requested: her hook holds the app's push lock
    refused = clones[1].push(url_b)
    out, _ = first.communicate(timeout=GIT_TIMEOUT)

    assert first.returncode == 0, out
    assert refused.returncode != 0, refused.output
    assert "Another push to this app is being built" in refused.output, refused.output
    assert remote_head(base, url_b) == clones[0].head()
    # Bob catches up through B and pushes again: a fast-forward of Alice's push.
    clones[1].run("pull", "--quiet", "--no-rebase", "--no-edit", url_b, "main")
    deployed(clones[1].push(url_b), 4)
    assert remote_head(base, url_a) == clones[1].head()
    assert len(api_a.builds(app)) == 3


@contextlib.contextmanager
def _database(role: Role) -> Iterator[Any]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(role.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(role.database_schema)))
        yield conn


def test_the_build_cache_follows_the_app_to_another_worker(
    platform: tuple[Role, Role, Role], tmp_path: Path
) -> None:
    """The worker that built first is gone; one with an empty home uses the cache it left,
    and a purge through an API process empties it for every worker."""
    a, b, worker = platform
    api_a, api_b = Api(a), Api(b)  # type: ignore[arg-type]
    app = api_a.create_app("shared-cache")
    repo = app_repo("python-web", tmp_path / "python-web")
    first = repo.push(git_url(a, app))  # type: ignore[arg-type]
    deployed(first, 2)
    assert "Downloading six" in first.output

    worker.stop()
    other = Role(tmp_path / "home-w2", "worker", worker.database_url, worker.database_schema)
    other.start()
    try:
        repo.commit_all("Deploy v3")
        cached = repo.push(git_url(b, app))  # type: ignore[arg-type]
        deployed(cached, 3)
        assert "-----> Using cached dependencies" in cached.remote(), cached.output
        assert "Downloading" not in cached.output
        assert any((other.home / "cache").iterdir())  # restored from the database

        response = api_b.client.delete(f"/apps/{app}/build-cache")
        assert response.status_code == 202, response.text
        repo.commit_all("Deploy v4")
        again = repo.push(git_url(a, app))  # type: ignore[arg-type]
        deployed(again, 4)
        assert "Downloading six" in again.output
        assert "Using cached" not in again.output
    finally:
        other.stop()


def test_a_push_whose_api_process_died_is_settled_by_the_worker(
    platform: tuple[Role, Role, Role], tmp_path: Path
) -> None:
    """kill -9 of the API process serving a push mid-build: the worker finishes the build
    and, from the push record and pack in the database, moves the canonical branch, which
    the other API process then serves."""
    a, b, _worker = platform
    api_b = Api(b)  # type: ignore[arg-type]
    app = api_b.create_app("shared-crash")
    slow = str(slow_buildpack(tmp_path / "slow-buildpack", 6))
    api_b.request(
        "PUT", f"/apps/{app}/buildpack-installations", json={"updates": [{"buildpack": slow}]}
    )
    repo = app_repo("shell-app", tmp_path / "app")
    push = repo.popen("push", git_url(a, app), "main")  # type: ignore[arg-type]
    wait_for(lambda: api_b.builds(app), timeout=120, what="the build to be requested")

    a.crash()
    output, _ = push.communicate(timeout=60)
    assert push.returncode != 0, output

    wait_for(lambda: api_b.current_release(app)["version"] == 2, timeout=120, what="v2")
    url_b = git_url(b, app)  # type: ignore[arg-type]
    wait_for(lambda: remote_head(repo, url_b) == repo.head(), timeout=30, what="the branch")
    assert [x["status"] for x in api_b.builds(app)] == ["succeeded"]
    with _database(b) as conn:
        assert conn.execute("SELECT count(*) FROM waka_git_pushes").fetchone()[0] == 0
        assert (
            conn.execute("SELECT count(*) FROM waka_blobs WHERE key LIKE 'pushes/%'").fetchone()[0]
            == 0
        )
    again = repo.push(url_b)
    assert again.returncode == 0 and "Everything up-to-date" in again.output, again.output
