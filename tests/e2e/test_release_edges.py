"""Release edges with the real Heroku CLI, git and Docker: `releases:output` (live while the
release phase runs, complete after), `releases:retry`, `apps:info`'s slug size, and a renamed
app's new host name answering through the router the moment `apps:rename` returns.

The tests share one app (the module's `deployed` fixture): the release-phase fixture app with
a release command that takes a few seconds, so its output can be watched while it runs.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any, NamedTuple

import httpx
import pytest

from .conftest import (
    Api,
    WakaServer,
    app_repo,
    flat,
    git_url,
    key_values,
    release_rows,
    unique_name,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

MIGRATE = """#!/bin/sh
echo "release phase: migrating"
sleep 6
echo "release phase: done"
"""
HELLO = "Hello from release-phase"


class Deployed(NamedTuple):
    name: str
    push_output: str
    watched: list[tuple[float, str, str]]  # (seconds, line, v2's status then), by releases:output
    listed: str  # `heroku releases` while v2's release phase ran


def through_router(server: WakaServer, host: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.router_port}/", headers={"Host": host}, timeout=30)


def release(api: Api, app: str, version: int) -> dict[str, Any]:
    return api.get(f"/apps/{app}/releases/{version}")


def jedec(size: int) -> str:
    """The CLI's filesize(size, {round: 0, standard: "jedec"}) below a gigabyte."""
    for unit, scale in (("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{round(size / scale)} {unit}"
    return f"{size} B"


def follow_cli(server: WakaServer, *args: str) -> subprocess.Popen[str]:
    """Start the Heroku CLI without waiting for it; its stdout is read as it comes."""
    return subprocess.Popen(
        [str(server.heroku_cli), *args],
        cwd=server.cli_home,
        env=server.heroku_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def deployed(server: WakaServer, api: Api, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """Push the app and, while its release phase runs, follow it with `releases:output`."""
    app = api.create_app("release-edges")
    repo = app_repo("release-phase", tmp_path_factory.mktemp("repo") / "release-phase")
    (repo.path / "migrate.sh").write_text(MIGRATE)
    repo.commit_all("A release phase that takes a while")
    push = repo.popen("push", git_url(server, app), "main")

    # v2 exists, pending, as soon as its release phase starts.
    wait_for(
        lambda: any(r["version"] == 2 for r in api.releases(app)),
        timeout=300,
        what="v2 to be pending",
    )
    assert release(api, app, 2)["status"] == "pending"
    started = time.monotonic()
    listing = follow_cli(server, "releases", "-a", app)
    cli = follow_cli(server, "releases:output", "-a", app)
    watched: list[tuple[float, str, str]] = []
    assert cli.stdout is not None
    for line in cli.stdout:  # each line, with v2's status at the moment it arrived
        watched.append((time.monotonic() - started, line.rstrip("\n"), ""))
        watched[-1] = (*watched[-1][:2], release(api, app, 2)["status"])
    assert cli.wait(timeout=60) == 0, cli.stderr.read() if cli.stderr else ""
    listed, _ = listing.communicate(timeout=60)
    out, _ = push.communicate(timeout=300)
    assert push.returncode == 0, out
    return Deployed(app, out, watched, listed)


def test_releases_output_streams_while_the_release_phase_runs(
    server: WakaServer, api: Api, deployed: Deployed
) -> None:
    lines = [line for _, line, _ in deployed.watched]
    assert lines == ["release phase: migrating", "release phase: done"], deployed.watched
    (first_at, _, status_then), (done_at, _, _) = deployed.watched
    # The first line came while v2 was still pending, seconds before the phase ended.
    assert status_then == "pending", deployed.watched
    assert done_at - first_at > 3, deployed.watched
    [v2] = [row for row in release_rows(deployed.listed) if row[0] == 2]
    assert v2[1].endswith("release command executing"), deployed.listed
    # The pusher saw the same output in the build's, and v2 went live after it.
    assert "remote:        release phase: done" in deployed.push_output
    assert release(api, deployed.name, 2)["status"] == "succeeded"
    assert api.current_release(deployed.name)["version"] == 2


def test_releases_output_after_the_release_phase(server: WakaServer, deployed: Deployed) -> None:
    app = deployed.name
    for args in (("releases:output", "-a", app), ("releases:output", "v2", "-a", app)):
        out = server.heroku(*args).stdout
        assert out == "release phase: migrating\nrelease phase: done\n"
    # v1 ran no release phase: the CLI says so rather than "no output" for a release that had.
    result = server.heroku("releases:output", "v1", "-a", app)
    assert "Release v1 has no release output available." in flat(result.stderr)


def test_releases_retry_releases_the_same_slug_again(
    server: WakaServer, api: Api, deployed: Deployed
) -> None:
    app = deployed.name
    before = api.current_release(app)
    result = server.heroku("releases:retry", "-a", app)
    version = before["version"] + 1
    assert f"Retrying v{before['version']} on {app}... done, v{version}" in flat(result.stderr)
    # The CLI streamed the new release's phase to its end.
    assert result.stdout.splitlines()[-3:] == [
        "Running release command...",
        "release phase: migrating",
        "release phase: done",
    ]
    retried = api.current_release(app)
    assert retried["version"] == version and retried["status"] == "succeeded"
    assert retried["slug"] == before["slug"]
    assert retried["description"] == f"Retry of v{before['version']}: {before['description']}"
    assert retried["output_stream_url"] != before["output_stream_url"]
    out = server.heroku("releases:output", f"v{version}", "-a", app).stdout
    assert out == "release phase: migrating\nrelease phase: done\n"
    # The ledger holds it as a release of that slug, its phase passed.
    ledger = server.ledger_app(app)
    assert (ledger.current_release, ledger.slug_id) == (version, before["slug"]["id"])
    assert ledger.pending_releases == []


def test_apps_info_shows_the_slug_size(server: WakaServer, api: Api, deployed: Deployed) -> None:
    app = deployed.name
    slug_id = api.current_release(app)["slug"]["id"]
    with server.platform() as platform:
        on_disk = platform.slugs.get(slug_id).path.stat().st_size
    assert on_disk > 0
    info = json.loads(server.heroku("apps:info", "-a", app, "--json").stdout)
    assert info["app"]["slug_size"] == on_disk
    assert api.get(f"/apps/{app}/slugs/{slug_id}")["size"] == on_disk
    shown = key_values(server.heroku("apps:info", "-a", app).stdout.splitlines())
    assert shown["Slug Size"] == jedec(on_disk), shown  # it said "0 B" when slug_size was null


def test_a_renamed_app_answers_at_its_new_host_at_once(
    server: WakaServer, api: Api, deployed: Deployed
) -> None:
    name = deployed.name
    wait_for(
        lambda: through_router(server, f"{name}.localhost").status_code == 200,
        timeout=120,
        what="the web dyno to answer through the router",
    )
    names = [unique_name(f"renamed{n}") for n in range(3)] + [deployed.name]  # and back
    for new in names:
        server.heroku("apps:rename", new, "-a", name)
        # The very first request after the CLI returned: no wait, no retry.
        first = through_router(server, f"{new}.localhost")
        assert (first.status_code, first.text.strip()) == (200, HELLO), (new, first.text)
        assert through_router(server, f"{name}.localhost").status_code == 404
        name = new
