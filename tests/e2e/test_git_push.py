"""`git push` builds and deploys: the real git client against a real `waka up`, builds in the
stack image on the local Docker engine.

Each test makes its own app, so the tests run in any order and on several xdist workers. What
a user sees (git's exit code and `remote:` lines, the Heroku CLI, the Platform API's JSON) is
checked together with what the platform recorded (releases, builds, slugs, formation, ledger).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from .conftest import (
    FIXTURE_APPS,
    GIT_TIMEOUT,
    OWNER_EMAIL,
    Api,
    GitRepo,
    GitResult,
    WakaServer,
    app_repo,
    flat,
    git_url,
    release_rows,
    unique_name,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

REJECTED_BY_HOOK = "! [remote rejected] main -> main (pre-receive hook declined)"


def index_of(lines: list[str], text: str) -> int:
    """The index of the first line containing `text` (an assertion error if none does)."""
    for i, line in enumerate(lines):
        if text in line:
            return i
    raise AssertionError(f"no line contains {text!r}:\n" + "\n".join(lines))


def deployed(result: GitResult, version: int) -> None:
    """The push succeeded and released `version`, as the pusher sees it."""
    assert result.returncode == 0, result.output
    remote = result.remote()
    assert f"Released v{version}" in remote, result.output
    assert remote[-1] == "Verifying deploy... done.", result.output
    assert index_of(remote, f"Released v{version}") < index_of(remote, "Verifying deploy")


def versions(api: Api, app: str) -> list[tuple[int, str, bool]]:
    """(version, status, current) of every release, oldest first."""
    return [(r["version"], r["status"], r["current"]) for r in api.releases(app)]


def remote_head(repo: GitRepo, url: str) -> str | None:
    """The app repository's main branch (None when it has none), per `git ls-remote`."""
    out = repo.run("ls-remote", url, "refs/heads/main").output.split()
    return out[0] if out else None


# --- deploys ----------------------------------------------------------------------------------


def test_python_app_deploys_and_reuses_its_dependency_cache(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("python-web")
    url = git_url(server, app)
    repo = app_repo("python-web", tmp_path / "python-web")
    sha = repo.head()

    pushed = repo.push(url)
    deployed(pushed, 2)
    remote = pushed.remote()
    assert "-----> Python app detected" in remote
    assert index_of(remote, "Python app detected") < index_of(remote, "Released v2")
    assert any(line.startswith(("Collecting six", "Downloading six")) for line in remote), remote
    assert "* [new branch]      main -> main" in pushed.output

    out = server.heroku("releases", "-a", app).stdout
    assert f"=== {app} Releases - Current: v2" in out
    assert release_rows(out) == [
        (2, f"Deploy {sha[:8]}", OWNER_EMAIL),
        (1, "Initial release", OWNER_EMAIL),
    ]

    release = api.current_release(app)
    assert (release["version"], release["status"]) == (2, "succeeded")
    [build] = api.builds(app)
    assert build["status"] == "succeeded"
    assert build["source_blob"]["version"] == sha
    assert build["user"]["email"] == OWNER_EMAIL
    assert build["release"] == {"id": release["id"]}
    assert build["slug"] is not None and build["slug"] == release["slug"]

    slug = api.get(f"/apps/{app}/slugs/{build['slug']['id']}")
    assert slug["process_types"] == {"web": "python3 app.py"}
    assert re.fullmatch(r"SHA256:[0-9a-f]{64}", slug["checksum"]), slug
    assert slug["size"] > 0
    assert slug["commit"] == sha
    assert slug["buildpack_provided_description"] == "Python"

    # The first deploy gives web one dyno, as on Heroku.
    formation = {f["type"]: f["quantity"] for f in api.get(f"/apps/{app}/formation")}
    assert formation == {"web": 1}
    ledger = server.ledger_app(app)
    assert (ledger.current_release, ledger.latest_release) == (2, 2)
    assert ledger.slug_id == build["slug"]["id"]
    assert ledger.pending_builds == []

    # A change with the same requirements: the dependencies come from the app's build cache.
    app_py = repo.path / "app.py"
    app_py.write_text(app_py.read_text() + "\n# A change that leaves requirements.txt alone.\n")
    sha2 = repo.commit_all("Change the app, not its dependencies")
    pushed = repo.push(url)
    deployed(pushed, 3)
    assert "-----> Using cached dependencies" in pushed.remote()
    assert "Downloading" not in pushed.output
    assert "Collecting" not in pushed.output
    assert f"{sha[:7]}..{sha2[:7]}  main -> main" in pushed.output

    assert versions(api, app) == [
        (1, "succeeded", False),
        (2, "succeeded", False),
        (3, "succeeded", True),
    ]
    assert api.current_release(app)["description"] == f"Deploy {sha2[:8]}"
    builds = api.builds(app)
    assert sorted(b["source_blob"]["version"] for b in builds) == sorted([sha, sha2])
    assert all(b["status"] == "succeeded" for b in builds)
    # A formation change is not a release, and a second deploy does not scale web again.
    assert {f["type"]: f["quantity"] for f in api.get(f"/apps/{app}/formation")} == {"web": 1}


def test_node_app_runs_npm_ci_and_its_build_script(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("node-web")
    repo = app_repo("node-web", tmp_path / "node-web")

    pushed = repo.push(git_url(server, app))
    deployed(pushed, 2)
    remote = pushed.remote()
    order = [
        "-----> Node.js app detected",
        "-----> Installing dependencies with npm ci",
        "added 1 package",
        "-----> Running build",
        "build.js wrote dist/built.txt",
        "Released v2",
    ]
    positions = [index_of(remote, text) for text in order]
    assert positions == sorted(positions), pushed.output

    [build] = api.builds(app)
    assert build["status"] == "succeeded"
    slug = api.get(f"/apps/{app}/slugs/{build['slug']['id']}")
    assert slug["process_types"] == {"web": "npm start"}
    assert slug["buildpack_provided_description"] == "Node.js"
    assert api.current_release(app)["version"] == 2


@pytest.mark.parametrize(
    ("fixture", "detected", "branch", "process_types", "formation"),
    [
        (
            "static-site",
            "Static",
            "main",
            {"web": "python3 .heroku/static/server.py"},
            {"web": 1},
        ),
        # Procfile-only, pushed to master (Heroku takes main or master).
        ("shell-app", "Procfile", "master", {"web", "worker"}, {"web": 1, "worker": 0}),
    ],
)
def test_static_site_and_procfile_app_deploy(
    server: WakaServer,
    api: Api,
    tmp_path: Path,
    fixture: str,
    detected: str,
    branch: str,
    process_types: dict[str, str] | set[str],
    formation: dict[str, int],
) -> None:
    app = api.create_app(fixture)
    repo = app_repo(fixture, tmp_path / fixture, branch=branch)
    sha = repo.head()

    pushed = repo.push(git_url(server, app), branch)
    deployed(pushed, 2)
    assert f"-----> {detected} app detected" in pushed.remote()
    assert f"* [new branch]      {branch} -> {branch}" in pushed.output

    release = api.current_release(app)
    assert (release["version"], release["description"]) == (2, f"Deploy {sha[:8]}")
    [build] = api.builds(app)
    assert build["status"] == "succeeded"
    slug = api.get(f"/apps/{app}/slugs/{build['slug']['id']}")
    if isinstance(process_types, set):
        assert set(slug["process_types"]) == process_types
    else:
        assert slug["process_types"] == process_types
    assert {f["type"]: f["quantity"] for f in api.get(f"/apps/{app}/formation")} == formation


# --- custom buildpacks ------------------------------------------------------------------------


def test_custom_buildpack_from_a_local_directory(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("custom-path")
    path = str(FIXTURE_APPS / "custom-buildpack")
    # The Heroku CLI only takes URLs and registry names (it asks the registry about a path),
    # so a directory is set through the API, as the issue allows.
    installed = api.request(
        "PUT", f"/apps/{app}/buildpack-installations", json={"updates": [{"buildpack": path}]}
    )
    assert installed == [{"buildpack": {"url": path, "name": path}, "ordinal": 0}]
    out = server.heroku("buildpacks", "-a", app).stdout
    assert out.strip().splitlines()[-1].strip() == path
    server.heroku("config:set", "GREETING=hello", "-a", app)  # v2

    repo = app_repo("shell-app", tmp_path / "shell-app")
    pushed = repo.push(git_url(server, app))
    deployed(pushed, 3)
    remote = pushed.remote()
    order = [
        f"-----> Using buildpack: {path}",
        "-----> Custom app detected",
        "-----> Custom buildpack: recording the build contract",
        "build 1 with this cache",
        "Default types for buildpack -> web, worker",
        "Released v3",
    ]
    positions = [index_of(remote, text) for text in order]
    assert positions == sorted(positions), pushed.output

    [build] = api.builds(app)
    assert build["status"] == "succeeded"
    assert build["buildpacks"] == [{"url": path, "name": path}]
    slug = api.get(f"/apps/{app}/slugs/{build['slug']['id']}")
    assert slug["buildpack_provided_description"] == "Custom"
    # The app's Procfile overrides the buildpack's default process types by name.
    assert set(slug["process_types"]) == {"web", "worker"}
    assert slug["process_types"]["web"].startswith("www=$(mktemp -d)")

    # What the buildpack recorded into the slug: the v2 contract, config only in ENV_DIR.
    record = tmp_path / "slug"
    with server.platform() as platform:
        platform.builder.slugs.extract(slug["id"], record)
    recorded = record / ".custom-buildpack"
    argv = (recorded / "argv").read_text().split()  # BUILD_DIR CACHE_DIR ENV_DIR
    assert len(argv) == 3 and all(arg.startswith("/") for arg in argv), argv
    assert (recorded / "env-values").read_text().splitlines() == ["GREETING=hello"]
    assert "GREETING" not in (recorded / "environment-names").read_text().split()
    environment = (recorded / "environment").read_text()
    assert f"SOURCE_VERSION={repo.head()}" in environment

    # The build cache survives between builds of the app.
    repo.commit_all("Build again")
    pushed = repo.push(git_url(server, app))
    deployed(pushed, 4)
    assert "build 2 with this cache" in pushed.remote()
    assert api.current_release(app)["version"] == 4


def test_custom_buildpack_from_a_git_url(server: WakaServer, api: Api, tmp_path: Path) -> None:
    source = app_repo("custom-buildpack", tmp_path / "buildpack-src")
    bare = tmp_path / "custom-buildpack.git"
    source.run("clone", "--quiet", "--bare", str(source.path), str(bare))
    buildpack_url = f"file://{bare}"

    app = api.create_app("custom-git")
    out = server.heroku("buildpacks:set", buildpack_url, "-a", app).stdout
    assert f"Buildpack set. Next release on {app} will use {buildpack_url}." in flat(out)
    out = server.heroku("buildpacks", "-a", app).stdout
    assert out.strip().splitlines()[-1].strip() == buildpack_url
    assert api.get(f"/apps/{app}/buildpack-installations") == [
        {"buildpack": {"url": buildpack_url, "name": buildpack_url}, "ordinal": 0}
    ]

    repo = app_repo("shell-app", tmp_path / "shell-app")
    pushed = repo.push(git_url(server, app))
    deployed(pushed, 2)
    remote = pushed.remote()
    commit = source.run("rev-parse", "--short", "HEAD").output.strip()
    assert f"-----> Using buildpack: {buildpack_url}" in remote
    assert any(line.startswith(f"Fetched {buildpack_url} at ") for line in remote), remote
    assert any(commit in line for line in remote if line.startswith("Fetched")), remote
    assert "-----> Custom buildpack: recording the build contract" in remote

    [build] = api.builds(app)
    assert build["status"] == "succeeded"
    assert build["buildpacks"] == [{"url": buildpack_url, "name": buildpack_url}]
    assert api.current_release(app)["version"] == 2


# --- failures ---------------------------------------------------------------------------------


def test_failing_build_rejects_the_push_and_changes_nothing(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("failing-build")
    url = git_url(server, app)
    repo = app_repo("shell-app", tmp_path / "app")
    deployed(repo.push(url), 2)
    good = repo.head()

    repo.replace_with("failing-build")
    bad = repo.commit_all("Depend on a package that does not exist")
    pushed = repo.push(url)
    assert pushed.returncode != 0, pushed.output
    assert REJECTED_BY_HOOK in pushed.output
    remote = pushed.remote()
    assert "-----> Python app detected" in remote
    assert any("Failed to compile Python app" in line for line in remote), pushed.output
    assert any("Push rejected" in line for line in remote), pushed.output
    assert "Released v" not in pushed.output
    assert "Verifying deploy" not in pushed.output

    # Nothing changed: the same releases, v2 current, the branch still at the good commit.
    assert versions(api, app) == [(1, "succeeded", False), (2, "succeeded", True)]
    assert "Current: v2" in server.heroku("releases", "-a", app).stdout
    assert remote_head(repo, url) == good
    builds = {b["source_blob"]["version"]: b for b in api.builds(app)}
    assert builds[good]["status"] == "succeeded"
    assert builds[bad]["status"] == "failed"
    assert builds[bad]["release"] is None and builds[bad]["slug"] is None
    ledger = server.ledger_app(app)
    assert (ledger.current_release, ledger.latest_release) == (2, 2)
    assert ledger.pending_builds == []


def test_release_phase_runs_before_the_release(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("release-phase")
    repo = app_repo("release-phase", tmp_path / "release-phase")
    pushed = repo.push(git_url(server, app))
    deployed(pushed, 2)
    remote = pushed.remote()
    order = [
        "-----> Running release command...",
        "release phase: migrating (DATABASE_URL is not set)",
        "release phase: done",
        "Released v2",
    ]
    positions = [index_of(remote, text) for text in order]
    assert positions == sorted(positions), pushed.output

    release = api.current_release(app)
    assert (release["version"], release["status"]) == (2, "succeeded")
    [build] = api.builds(app)
    slug = api.get(f"/apps/{app}/slugs/{build['slug']['id']}")
    assert slug["process_types"]["release"] == "./migrate.sh"


def test_failing_release_phase_keeps_the_previous_release(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("failing-release")
    url = git_url(server, app)
    repo = app_repo("shell-app", tmp_path / "app")
    deployed(repo.push(url), 2)
    good = repo.head()
    good_slug = api.current_release(app)["slug"]

    repo.replace_with("failing-release-phase")
    bad = repo.commit_all("A migration that fails")
    pushed = repo.push(url)
    assert pushed.returncode != 0, pushed.output
    assert REJECTED_BY_HOOK in pushed.output
    remote = pushed.remote()
    assert index_of(remote, "-----> Running release command...") < index_of(
        remote, 'release phase: migration 0002 failed: column "email" already exists'
    )
    assert any("Release phase failed" in line for line in remote), pushed.output
    assert "Released v" not in pushed.output
    assert "Verifying deploy" not in pushed.output

    # v3 exists, failed; v2 is still the current release.
    assert versions(api, app) == [
        (1, "succeeded", False),
        (2, "succeeded", True),
        (3, "failed", False),
    ]
    current = api.current_release(app)
    assert current["slug"] == good_slug
    out = server.heroku("releases", "-a", app).stdout
    assert f"=== {app} Releases - Current: v2" in out
    assert release_rows(out)[0] == (3, f"Deploy {bad[:8]} release command failed", OWNER_EMAIL)
    assert remote_head(repo, url) == good
    ledger = server.ledger_app(app)
    assert (ledger.current_release, ledger.latest_release) == (2, 3)
    assert ledger.failed_releases == [3]

    # Fixed, the next push releases v4.
    (repo.path / "migrate.sh").write_text("#!/bin/sh\necho 'release phase: fixed'\n")
    fixed = repo.commit_all("Fix the migration")
    pushed = repo.push(url)
    deployed(pushed, 4)
    assert "release phase: fixed" in pushed.remote()
    assert versions(api, app)[-1] == (4, "succeeded", True)
    assert remote_head(repo, url) == fixed


# --- git's rules ------------------------------------------------------------------------------


def test_only_main_or_master_can_be_pushed(server: WakaServer, api: Api, tmp_path: Path) -> None:
    app = api.create_app("branches")
    url = git_url(server, app)
    repo = app_repo("shell-app", tmp_path / "app")

    pushed = repo.push(url, "HEAD:refs/heads/feature")
    assert pushed.returncode != 0, pushed.output
    assert "! [remote rejected] HEAD -> feature (pre-receive hook declined)" in pushed.output
    assert any(
        "Pushing to refs/heads/feature is not supported" in line for line in pushed.remote()
    ), pushed.output
    assert versions(api, app) == [(1, "succeeded", True)]
    assert api.builds(app) == []
    assert repo.run("ls-remote", url).output.strip() == ""

    deployed(repo.push(url), 2)
    deleted = repo.push(url, ":main")
    assert deleted.returncode != 0, deleted.output
    assert any("Deleting refs/heads/main is not allowed" in line for line in deleted.remote())
    assert remote_head(repo, url) == repo.head()
    assert versions(api, app)[-1] == (2, "succeeded", True)


def test_non_fast_forward_push_needs_force(server: WakaServer, api: Api, tmp_path: Path) -> None:
    app = api.create_app("force")
    url = git_url(server, app)
    repo = app_repo("shell-app", tmp_path / "app")
    deployed(repo.push(url), 2)
    first = repo.head()

    (repo.path / "NOTES").write_text("rewritten history\n")
    repo.run("add", "NOTES")
    repo.run("commit", "--quiet", "--amend", "-m", "Rewritten")
    rewritten = repo.head()

    pushed = repo.push(url)
    assert pushed.returncode != 0, pushed.output
    assert "! [rejected]        main -> main (non-fast-forward)" in pushed.output
    assert pushed.remote() == []  # git refused it itself: nothing was built
    assert versions(api, app)[-1] == (2, "succeeded", True)
    assert remote_head(repo, url) == first

    forced = repo.push(url, "--force", "main")
    deployed(forced, 3)
    assert f"+ {first[:7]}...{rewritten[:7]} main -> main (forced update)" in forced.output
    assert api.current_release(app)["description"] == f"Deploy {rewritten[:8]}"
    assert remote_head(repo, url) == rewritten


def test_push_without_a_valid_api_key_fails(server: WakaServer, api: Api, tmp_path: Path) -> None:
    app = api.create_app("no-key")
    repo = app_repo("shell-app", tmp_path / "app")

    # No credentials: the server answers 401, git would ask for them, but may not prompt.
    pushed = repo.push(git_url(server, app, api_key=""))
    assert pushed.returncode != 0, pushed.output
    assert "could not read Username" in pushed.output
    assert "terminal prompts disabled" in pushed.output
    response = httpx.get(
        f"http://127.0.0.1:{server.port}/{app}.git/info/refs?service=git-receive-pack"
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic ")

    pushed = repo.push(git_url(server, app, api_key="not-a-valid-key"))
    assert pushed.returncode != 0, pushed.output
    assert "Authentication failed" in pushed.output

    assert versions(api, app) == [(1, "succeeded", True)]
    assert api.builds(app) == []


def test_other_users_can_neither_push_nor_fetch(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    app = api.create_app("private")
    other_key = server.create_user(f"{unique_name('other')}@example.com")
    repo = app_repo("shell-app", tmp_path / "app")

    pushed = repo.push(git_url(server, app, api_key=other_key))
    assert pushed.returncode != 0, pushed.output
    assert "The requested URL returned error: 403" in pushed.output
    cloned = repo.run(
        "clone", git_url(server, app, api_key=other_key), str(tmp_path / "stolen"), check=False
    )
    assert cloned.returncode != 0, cloned.output
    assert "The requested URL returned error: 403" in cloned.output
    assert not (tmp_path / "stolen" / "Procfile").exists()

    response = httpx.get(
        f"http://127.0.0.1:{server.port}/{app}.git/info/refs?service=git-upload-pack",
        auth=("x", other_key),
    )
    assert response.status_code == 403
    assert f"You do not have access to the app {app}." in response.json()["message"]

    assert versions(api, app) == [(1, "succeeded", True)]
    assert api.builds(app) == []


def test_owner_can_clone_what_was_pushed(server: WakaServer, api: Api, tmp_path: Path) -> None:
    app = api.create_app("clone")
    url = git_url(server, app)
    repo = app_repo("shell-app", tmp_path / "app")
    deployed(repo.push(url), 2)

    repo.run("clone", "--quiet", url, str(tmp_path / "clone"))
    clone = GitRepo(tmp_path / "clone")
    assert clone.head() == repo.head()
    assert clone.run("log", "--format=%s").output.strip() == "shell-app: first commit"
    assert (clone.path / "Procfile").read_text() == (repo.path / "Procfile").read_text()
    fetched = clone.run("fetch", url, "main")
    assert fetched.returncode == 0


# --- concurrent pushes ------------------------------------------------------------------------

# What a refused push may say: waka's lock or its check that the branch did not move under
# it, or git's own refusal of a push behind the branch.
CLEAR_REFUSALS = (
    "Another push to this app is being built",
    "The branch moved while you pushed",
    "(fetch first)",
    "(non-fast-forward)",
)


def test_two_pushes_at_once_lose_nothing(server: WakaServer, api: Api, tmp_path: Path) -> None:
    app = api.create_app("race")
    url = git_url(server, app)
    base = app_repo("shell-app", tmp_path / "base")
    deployed(base.push(url), 2)

    clones = []
    for name in ("alice", "bob"):
        base.run("clone", "--quiet", url, str(tmp_path / name))
        clone = GitRepo(tmp_path / name)
        (clone.path / f"{name}.txt").write_text(f"{name} was here\n")
        clone.commit_all(f"{name}'s change")
        clones.append(clone)

    pushes = [clone.popen("push", url, "main") for clone in clones]
    results = []
    for process in pushes:
        try:
            out, _ = process.communicate(timeout=GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
            raise AssertionError(f"a concurrent push hung:\n{out}") from None
        results.append(GitResult(process.returncode, out))

    succeeded = [r for r in results if r.returncode == 0]
    assert succeeded, "neither push succeeded:\n" + "\n---\n".join(r.output for r in results)
    for clone, result in zip(clones, results, strict=True):
        if result.returncode == 0:
            assert "Verifying deploy... done." in result.remote(), result.output
            assert re.search(r"^remote: +Released v\d+", result.output, re.M), result.output
        else:
            assert any(text in result.output for text in CLEAR_REFUSALS), result.output
            assert "Released v" not in result.output, result.output
            # Refused, it catches up and pushes again: now it deploys.
            clone.run("pull", "--quiet", "--rebase", url, "main")
            next_version = api.current_release(app)["version"] + 1
            deployed(clone.push(url), next_version)

    # Nothing lost, nothing twice: v1..v4, one deploy per commit, every build succeeded.
    releases = api.releases(app)
    assert [r["version"] for r in releases] == [1, 2, 3, 4]
    assert [r["status"] for r in releases] == ["succeeded"] * 4
    assert releases[-1]["current"]
    deploys = [r["description"] for r in releases[1:]]
    assert len(set(deploys)) == 3, deploys
    builds = api.builds(app)
    assert len(builds) == 3 and all(b["status"] == "succeeded" for b in builds), builds
    assert {f"Deploy {b['source_blob']['version'][:8]}" for b in builds} == set(deploys)
    final = GitRepo(tmp_path / "final")
    base.run("clone", "--quiet", url, str(final.path))
    assert (final.path / "alice.txt").exists() and (final.path / "bob.txt").exists()
    assert final.head() == remote_head(base, url)
    assert f"Deploy {final.head()[:8]}" == releases[-1]["description"]


def test_push_based_on_a_moved_branch_builds_nothing(
    server: WakaServer, api: Api, tmp_path: Path
) -> None:
    """What a git client sends when it loses a race: its push replaces the commit it was
    shown, but another push moved the branch since. git would refuse to update the branch
    only after the pre-receive hook, so the build must not be released either."""
    app = api.create_app("stale")
    url = git_url(server, app)
    repo = app_repo("shell-app", tmp_path / "app")
    deployed(repo.push(url), 2)
    base = repo.head()
    (repo.path / "first.txt").write_text("first\n")
    first = repo.commit_all("The push that won")
    deployed(repo.push(url), 3)

    repo.run("checkout", "--quiet", "-b", "late", base)
    (repo.path / "late.txt").write_text("late\n")
    late = repo.commit_all("The push that lost")
    pack = subprocess.run(
        ["git", "pack-objects", "--stdout", "--revs", "-q"],
        input=f"{late}\n^{base}\n".encode(),
        cwd=repo.path,
        capture_output=True,
        check=True,
    ).stdout
    command = f"{base} {late} refs/heads/main\0 report-status side-band-64k agent=waka-test\n"
    line = command.encode()
    body = b"%04x" % (len(line) + 4) + line + b"0000" + pack
    response = httpx.post(
        f"http://127.0.0.1:{server.port}/{app}.git/git-receive-pack",
        content=body,
        auth=("x", server.api_key),
        headers={
            "Content-Type": "application/x-git-receive-pack-request",
            "Accept": "application/x-git-receive-pack-result",
        },
        timeout=GIT_TIMEOUT,
    )
    assert response.status_code == 200
    assert b"ng refs/heads/main" in response.content, response.content
    assert b"ok refs/heads/main" not in response.content

    assert versions(api, app) == [
        (1, "succeeded", False),
        (2, "succeeded", False),
        (3, "succeeded", True),
    ]
    assert [b["source_blob"]["version"] for b in api.builds(app)].count(late) == 0
    assert remote_head(repo, url) == first
