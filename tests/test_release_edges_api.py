"""Releases of an existing slug (`releases:retry`), release-phase output, the app's slug size,
and the route table following renames: over the API in-process, on both backends."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.test_api import Api, error_of
from waka.adapters.runtime import Mount
from waka.bootstrap import Platform
from waka.domain.errors import InvalidParams
from waka.projections.releases import releases_of
from waka.reactors.release_phase import ReleasePhase
from waka.router.follower import RouteFollower
from waka.router.table import Backend, Route, RouteTable

RELEASE_TYPES = {"web": "python app.py", "release": "./migrate.sh"}


class ScriptedRuntime:
    """A runtime that 'runs' the release command: prints `lines`, exits with `status`."""

    name = "scripted"

    def __init__(self, lines: list[str], status: int = 0) -> None:
        self.lines = lines
        self.status = status
        self.runs: list[dict[str, Any]] = []

    def run(
        self,
        command: list[str],
        *,
        mounts: Sequence[Mount],
        env: Mapping[str, str],
        workdir: str,
        memory_mb: int,
        output: Callable[[bytes], None],
        timeout: float | None = None,
        **options: Any,
    ) -> int:
        self.runs.append({"command": command, "env": dict(env), "mounts": list(mounts)})
        for line in self.lines:
            output(f"{line}\n".encode())
        return self.status

    def sweep(self) -> int:
        return 0


class NoSlugs:
    """The slug store's `extract`, for slugs that exist only in the ledger."""

    def extract(self, slug_id: str, dest: Path) -> None:
        (dest / "Procfile").write_text("release: ./migrate.sh\n")


@pytest.fixture
def api(platform: Platform) -> Api:
    return Api(platform)


def built_app(api: Api, name: str, process_types: dict[str, str], size: int = 4096) -> str:
    """An app with one build recorded in the ledger (no release phase ran); its slug id."""
    app = api.post("/apps", json={"name": name}).json()
    ledger, owner = api.platform.ledger, api.platform.ledger.get_app(UUID(app["id"])).owner
    build_id = ledger.request_build(owner, UUID(app["id"]), "http://127.0.0.1/s.tgz", "1a2b3c4d5e")
    slug = {
        "id": f"slug-of-{name}",
        "process_types": process_types,
        "commit": "1a2b3c4d5e",
        "checksum": "SHA256:0",
        "size": size,
    }
    assert ledger.finish_build(UUID(app["id"]), build_id, slug, None, owner) == 2
    api.platform.projector.catch_up()
    return slug["id"]


def release_phase(platform: Platform, runtime: ScriptedRuntime, tmp_path: Path) -> ReleasePhase:
    return ReleasePhase(runtime, NoSlugs(), platform.release_logs, work_root=tmp_path / "work")  # type: ignore[arg-type]


def output_of(api: Api, release: dict[str, Any]) -> str:
    """GET the release's output_stream_url, without credentials (the CLI sends none)."""
    url = release["output_stream_url"]
    assert url.startswith(api.platform.settings.api_url + "/release-output/")
    response = api.client.get(url.removeprefix(api.platform.settings.api_url))
    assert response.status_code == 200, response.text
    return response.text


# --- a release of an existing slug ----------------------------------------------------------


def test_a_slug_without_release_phase_is_released_at_once(api: Api) -> None:
    slug_id = built_app(api, "plain", {"web": "python app.py"})
    created = api.post("/apps/plain/releases", json={"slug": slug_id, "description": "Again"})
    assert created.status_code == 201, created.text
    release = created.json()
    assert (release["version"], release["status"], release["current"]) == (3, "succeeded", True)
    assert release["description"] == "Again"
    assert release["slug"] == {"id": slug_id} and release["output_stream_url"] is None
    # Without a description, Heroku's "Deploy <commit>".
    again = api.post("/apps/plain/releases", json={"slug": {"id": slug_id}}).json()
    assert (again["version"], again["description"]) == (4, "Deploy 1a2b3c4d")


def test_retry_runs_the_release_phase_then_goes_live(
    api: Api, platform: Platform, tmp_path: Path
) -> None:
    slug_id = built_app(api, "retried", RELEASE_TYPES)
    api.patch("/apps/retried/config-vars", json={"GREETING": "hi"})  # v3
    created = api.post(
        "/apps/retried/releases", json={"slug": slug_id, "description": "Retry of v2: Deploy"}
    )
    assert created.status_code == 201, created.text
    pending = created.json()
    assert (pending["version"], pending["status"], pending["current"]) == (4, "pending", False)
    assert pending["output_stream_url"] and pending["eligible_for_rollback"] is False
    assert api.get("/apps/retried/releases/4").json()["status"] == "pending"
    # A release still in its release phase cannot be rolled back to.
    assert error_of(api.post("/apps/retried/releases", json={"release": "4"}))[:2] == (
        422,
        "invalid_params",
    )

    runtime = ScriptedRuntime(["migrating", "done"])
    assert release_phase(platform, runtime, tmp_path).run_pending(platform) == 1
    [run] = runtime.runs
    assert run["env"]["GREETING"] == "hi" and run["env"]["DYNO"] == "release.1"
    assert run["command"][-1].endswith("./migrate.sh")

    done = api.get("/apps/retried/releases/4").json()
    assert (done["status"], done["current"], done["eligible_for_rollback"]) == (
        "succeeded",
        True,
        True,
    )
    assert output_of(api, done) == "migrating\ndone\n"
    # Nothing pending any more: a second pass runs nothing.
    assert release_phase(platform, runtime, tmp_path).run_pending(platform) == 0
    # The decided release can be rolled back to, with the config it was made with.
    assert api.post("/apps/retried/releases", json={"release": "4"}).status_code == 201
    assert api.get("/apps/retried/releases/5/config-vars").json() == {"GREETING": "hi"}


def test_a_failed_retry_keeps_the_current_release(
    api: Api, platform: Platform, tmp_path: Path
) -> None:
    slug_id = built_app(api, "flaky", RELEASE_TYPES)
    api.post("/apps/flaky/releases", json={"slug": slug_id})
    runtime = ScriptedRuntime(["migration 0002 failed"], status=3)
    release_phase(platform, runtime, tmp_path).run_pending(platform)

    failed = api.get("/apps/flaky/releases/3").json()
    assert (failed["status"], failed["current"]) == ("failed", False)
    assert api.get("/apps/flaky/releases/2").json()["current"] is True
    text = output_of(api, failed)
    assert text.startswith("migration 0002 failed\n")
    assert "release command exited with status 3" in text
    app = platform.ledger.get_app(UUID(api.get("/apps/flaky").json()["id"]))
    assert (app.current_release, app.failed_releases, app.pending_releases) == (2, [3], [])


def test_bad_slug_releases(api: Api, platform: Platform) -> None:
    built_app(api, "mine", RELEASE_TYPES)
    theirs = built_app(api, "theirs", RELEASE_TYPES)
    for body in ({"slug": theirs}, {"slug": "no-such-slug"}, {"slug": {"id": "nope"}}):
        assert error_of(api.post("/apps/mine/releases", json=body)) == (
            404,
            "not_found",
            "Couldn't find that slug.",
        )
    for body in ({"slug": 7}, {"slug": None}, {"slug": "slug-of-mine", "description": 1}):
        status, error_id, _ = error_of(api.post("/apps/mine/releases", json=body))
        assert (status, error_id) == (422, "invalid_params")
    assert [r["version"] for r in api.get("/apps/mine/releases").json()] == [1, 2]


def test_release_output_urls(api: Api, platform: Platform) -> None:
    slug_id = built_app(api, "outputs", RELEASE_TYPES)
    pending = api.post("/apps/outputs/releases", json={"slug": slug_id}).json()
    # Releases without a release phase have none; unknown or malformed ids are 404s.
    assert api.get("/apps/outputs/releases/1").json()["output_stream_url"] is None
    for path in ("/release-output/00000000-0000-0000-0000-000000000000", "/release-output/x"):
        response = api.client.get(path)
        assert response.status_code == 404 and response.json()["id"] == "not_found"
    # Another user cannot see the release, though the URL itself is the permission.
    other = Api(platform, "other@example.com")
    assert other.get("/apps/outputs/releases/3").status_code == 403
    # Output ids are random, not derived from the release (whose id the API shows).
    assert pending["id"] not in pending["output_stream_url"]


# --- the slug size apps:info shows -----------------------------------------------------------


def test_app_slug_size_is_the_live_slugs(api: Api) -> None:
    api.post("/apps", json={"name": "empty"})
    assert api.get("/apps/empty").json()["slug_size"] is None
    built_app(api, "sized", {"web": "python app.py"}, size=123_456)
    assert api.get("/apps/sized").json()["slug_size"] == 123_456
    assert {a["name"]: a["slug_size"] for a in api.get("/apps").json()} == {
        "empty": None,
        "sized": 123_456,
    }


# --- the route table follows the ledger -----------------------------------------------------


def route(app_id: str, name: str) -> Route:
    return Route(app_id, name, backends=(Backend("127.0.0.1", 5000, "web.1"),))


def test_a_rename_routes_at_once_and_a_stale_tick_cannot_undo_it() -> None:
    table = RouteTable()
    table.set_app(route("a1", "old"))
    table.rename_app("a1", "new")
    assert table.lookup("new.localhost:8080").app_name == "new"  # type: ignore[union-attr]
    assert table.lookup("old.localhost") is None
    table.set_app(route("a1", "old"))  # the dyno manager, from a read before the rename
    assert table.lookup("old.localhost") is None
    assert table.lookup(b"new.localhost").backends  # type: ignore[union-attr]
    table.remove_app("a1", destroyed=True)
    table.set_app(route("a1", "new"))  # a tick that read the app before it was destroyed
    assert table.lookup("new.localhost") is None and table.get("a1") is None


def test_the_follower_applies_renames_when_the_ledger_saves(
    platform: Platform, actor: dict[str, str]
) -> None:
    app = platform.ledger.create_app(actor, "before")
    from tests.waiting import wait_for
    from waka.reactors.lifecycle import Reactors

    table = RouteTable()
    table.set_app(route(str(app.id), "before"))
    follower = RouteFollower(platform.ledger, table, interval=60)  # no timer: saves wake it
    reactors = Reactors(platform.leases, platform.projector.catch_up)
    reactors.add(follower)
    platform.notifications.subscribe(reactors.saved)
    platform.notifications.start()
    reactors.start()
    try:
        wait_for(lambda: reactors.leading("route-follower"))
        platform.ledger.rename_app(actor, app.id, "after")
        # No poll, no tick: the save itself moved the name, before rename_app returned.
        assert table.lookup("after.localhost") is not None
        assert table.lookup("before.localhost") is None
        platform.ledger.destroy_app(actor, app.id)
        assert table.lookup("after.localhost") is None
    finally:
        reactors.stop()
        platform.notifications.stop()
    # Another process's rename (no listener here) is found by the periodic poll.
    other = platform.ledger.create_app(actor, "elsewhere")
    table.set_app(route(str(other.id), "elsewhere"))
    platform.ledger.rename_app(actor, other.id, "moved")
    assert table.lookup("moved.localhost") is None
    assert follower.poll() == 1
    assert table.lookup("moved.localhost") is not None


def test_a_pending_release_keeps_old_snapshots_readable(
    platform: Platform, actor: dict[str, str]
) -> None:
    """Snapshots taken before pending releases existed lack the attribute."""
    app = platform.ledger.create_app(actor, "snap")
    del app.__dict__["pending_releases"]
    assert app.pending_release(2) is None
    with pytest.raises(InvalidParams):
        app.rollback(app, 7, actor)  # not pending, not a release: the usual refusal


def test_a_builds_release_takes_its_version_before_its_phase(
    platform: Platform, actor: dict[str, str]
) -> None:
    ledger = platform.ledger
    app = ledger.create_app(actor, "building")
    build_id = ledger.request_build(actor, app.id, "http://127.0.0.1/s.tgz", "abcdef123456")
    slug = {"id": "slug-a", "process_types": RELEASE_TYPES, "commit": "abcdef123456"}
    pending = ledger.request_release_phase(app.id, build_id, slug, actor)
    assert pending["version"] == 2
    # Asked again (the build runs again after a crash): the same release, nothing recorded.
    saved = ledger.get_app(app.id).version
    again = ledger.request_release_phase(app.id, build_id, {**slug, "id": "slug-b"}, actor)
    assert again == pending and ledger.get_app(app.id).version == saved
    platform.projector.catch_up()
    [row] = [r for r in releases_of(platform.store, str(app.id)) if r["version"] == 2]
    assert (row["status"], row["build_id"], row["output_id"]) == (
        "pending",
        build_id,
        pending["output_id"],
    )

    # A config change meanwhile takes the next version; the build's release keeps its own.
    ledger.set_config(actor, app.id, {"FOO": "bar"})
    rebuilt = {**slug, "id": "slug-b", "checksum": "SHA256:1", "size": 10}
    assert ledger.finish_build(app.id, build_id, rebuilt, None, actor) == 2
    platform.projector.catch_up()
    rows = {r["version"]: r for r in releases_of(platform.store, str(app.id))}
    assert [(v, r["status"]) for v, r in rows.items()] == [
        (1, "succeeded"),
        (2, "succeeded"),
        (3, "succeeded"),
    ]
    assert rows[2]["slug_id"] == "slug-b" and rows[2]["description"] == "Deploy abcdef12"
    decided = ledger.get_app(app.id)
    assert (decided.current_release, decided.slug_id, decided.pending_releases) == (2, "slug-b", [])
    # v2 was decided after the config change: rolling back to it brings both.
    assert ledger.config_at_release(app.id, 2) == {"FOO": "bar"}
    assert ledger.get_app(app.id, version=decided.aggregate_version_of(2)).slug_id == "slug-b"


def test_a_build_that_breaks_in_its_release_phase_fails_its_release(
    platform: Platform, actor: dict[str, str]
) -> None:
    ledger = platform.ledger
    app = ledger.create_app(actor, "broken")
    build_id = ledger.request_build(actor, app.id, "http://127.0.0.1/s.tgz", "abcdef123456")
    slug = {"id": "slug-a", "process_types": RELEASE_TYPES, "commit": "abcdef123456"}
    assert ledger.request_release_phase(app.id, build_id, slug, actor)["version"] == 2
    assert ledger.fail_build(app.id, build_id, "Internal error while building.", actor)
    platform.projector.catch_up()
    statuses = [(r["version"], r["status"]) for r in releases_of(platform.store, str(app.id))]
    assert statuses == [(1, "succeeded"), (2, "failed")]  # not pending for ever
    failed = ledger.get_app(app.id)
    assert (failed.current_release, failed.failed_releases, failed.pending_releases) == (1, [2], [])
