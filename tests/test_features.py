"""App features: the API's shapes and errors, the switch in the ledger, dyno metadata, and how
the dyno manager replaces web dynos with and without preboot.

The dyno manager runs on the real read models and slug store; only the container engine is
the in-memory fake of test_dyno_backoff (with dynos that bind their port when told to)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import pytest

from tests.deploys import deploy
from tests.test_api import Api, error_of
from tests.test_dyno_backoff import FakeDynos, listening  # noqa: F401 (a fixture)
from tests.test_release_edges_api import RELEASE_TYPES, ScriptedRuntime, built_app, release_phase
from waka.adapters.dynos import DynoSpec
from waka.bootstrap import Platform
from waka.domain.actors import Actor
from waka.domain.app import App
from waka.domain.features import CATALOGUE, PREBOOT, RUNTIME_DYNO_METADATA
from waka.features import dyno_metadata, metadata_env, set_feature
from waka.reactors import dyno_manager
from waka.reactors.dyno_manager import DynoManager, RouteUpdate


def test_features_api_shapes_switches_and_errors(platform: Platform) -> None:
    api = Api(platform)
    assert api.post("/apps", json={"name": "flags"}).status_code == 201

    listed = api.get("/apps/flags/features").json()
    assert {f["name"]: (f["enabled"], f["state"]) for f in listed} == {
        "preboot": (False, "general"),
        "runtime-dyno-metadata": (False, "beta"),
    }
    assert set(listed[0]) >= {
        "id", "name", "display_name", "description", "doc_url", "state", "enabled",
        "feedback_email", "created_at", "updated_at",
    }  # fmt: skip

    enabled = api.patch("/apps/flags/features/preboot", json={"enabled": True})
    assert enabled.status_code == 200 and enabled.json()["enabled"] is True
    by_id = api.get(f"/apps/flags/features/{CATALOGUE[PREBOOT].id}").json()
    assert by_id["name"] == "preboot" and by_id["enabled"] is True
    # Enabling it again records nothing more.
    assert api.patch("/apps/flags/features/preboot", json={"enabled": True}).is_success
    app_id = UUID(api.get("/apps/flags").json()["id"])
    changes = [
        e
        for e in platform.ledger.repository.event_store.get(app_id)
        if isinstance(e, App.FeatureChanged)
    ]
    assert [(e.name, e.enabled, e.actor["email"]) for e in changes] == [
        ("preboot", True, "owner@example.com")
    ]
    disabled = api.patch("/apps/flags/features/preboot", json={"enabled": False}).json()
    assert disabled["enabled"] is False

    assert error_of(api.get("/apps/flags/features/turbo")) == (
        404, "not_found", "Couldn't find that feature (turbo).",
    )  # fmt: skip
    assert error_of(api.patch("/apps/flags/features/turbo", json={"enabled": True}))[0] == 404
    assert error_of(api.patch("/apps/flags/features/preboot", json={"enabled": "yes"})) == (
        422, "invalid_params", "enabled must be true or false.",
    )  # fmt: skip
    assert error_of(api.patch("/apps/flags/features/preboot", json=["x"]))[0] == 422
    assert error_of(api.get("/apps/nope/features"))[0] == 404

    # No account features: `heroku labs:enable NAME -a APP` needs the 404 to try the app.
    assert api.get("/account/features").json() == []
    assert error_of(api.get("/account/features/preboot"))[:2] == (404, "not_found")
    assert error_of(api.patch("/account/features/preboot", json={"enabled": True}))[0] == 404

    stranger = Api(platform, "stranger@example.com")
    assert stranger.get("/apps/flags/features").status_code in (403, 404)
    refused = stranger.patch("/apps/flags/features/preboot", json={"enabled": True})
    assert refused.status_code in (403, 404)
    assert api.get("/apps/flags/features/preboot").json()["enabled"] is False


def _deploy_commit(platform: Platform, actor: Actor, app_id: UUID, commit: str) -> int:
    build_id = platform.ledger.request_build(actor, app_id, "http://127.0.0.1/source.tgz")
    slug = {"id": f"slug-{commit[:4]}", "process_types": {"web": "python app.py"},
            "commit": commit, "checksum": "SHA256:0", "size": 1}  # fmt: skip
    version = platform.ledger.finish_build(app_id, build_id, slug, None, actor)
    platform.projector.catch_up()
    assert version is not None
    return version


def test_dyno_metadata_only_with_the_feature_and_of_the_release(
    platform: Platform, actor: Actor
) -> None:
    app = platform.ledger.create_app(actor, "meta")
    commit = "2c3a0b24aa0fd3a1b5fd0f1b3e5e2c1d0a9b8c7d"
    version = _deploy_commit(platform, actor, app.id, commit)
    app_id = str(app.id)
    assert dyno_metadata(platform.store, app_id, version) == {}

    set_feature(platform.ledger, actor, app.id, RUNTIME_DYNO_METADATA, True)
    platform.ledger.set_config(actor, app.id, {"FOO": "bar"})  # a new release, same slug
    platform.projector.catch_up()
    current = platform.store.query("SELECT current_release FROM waka_apps")[0]["current_release"]
    assert current == version + 1
    created = platform.store.query(
        "SELECT created_at FROM waka_releases WHERE version = ?", (current,)
    )[0]["created_at"]
    env = dyno_metadata(platform.store, app_id, current)
    assert env == {
        "HEROKU_APP_ID": app_id,
        "HEROKU_APP_NAME": "meta",
        "HEROKU_RELEASE_VERSION": f"v{current}",
        "HEROKU_RELEASE_CREATED_AT": created,
        "HEROKU_SLUG_COMMIT": commit,
        "HEROKU_SLUG_DESCRIPTION": f"Deploy {commit[:8]}",
    }
    one, two = (
        metadata_env(platform.store, app_id, current),
        metadata_env(platform.store, app_id, current),
    )
    assert UUID(one["HEROKU_DYNO_ID"]) != UUID(two["HEROKU_DYNO_ID"])  # one per dyno

    set_feature(platform.ledger, actor, app.id, RUNTIME_DYNO_METADATA, False)
    platform.projector.catch_up()
    assert metadata_env(platform.store, app_id, current) == {}


class BootingDynos(FakeDynos):
    """Fake dynos whose web dynos of one release bind their port only when told to."""

    def __init__(self, address: tuple[str, int], closed: tuple[str, int]) -> None:
        super().__init__(address)
        self.closed = closed
        self.slow_release: int | None = None

    def start(self, spec: DynoSpec) -> str:
        container_id = super().start(spec)
        if spec.release == self.slow_release:
            self.containers[container_id] = replace(
                self.containers[container_id], address=self.closed
            )
        return container_id

    def bind(self, name: str) -> None:
        for cid, dyno in self.containers.items():
            if dyno.name == name and dyno.release == self.slow_release:
                self.containers[cid] = replace(dyno, address=self.address)

    def releases(self) -> list[tuple[str, int]]:
        return sorted((d.name, d.release) for d in self.containers.values())


@pytest.fixture
def closed_port() -> Iterator[tuple[str, int]]:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()


@pytest.fixture
def shop(
    platform: Platform, actor: Actor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[App, str]:
    monkeypatch.setattr(dyno_manager, "DRAIN", 0.0)
    (tmp_path / "slug").mkdir()
    slug = platform.slugs.create(tmp_path / "slug")
    app = platform.ledger.create_app(actor, "shop")
    deploy(platform.ledger, actor, app.id, {"web": "python app.py"}, slug_id=slug.id)  # v2
    platform.ledger.scale(actor, app.id, [{"type": "web", "quantity": 2}])
    platform.projector.catch_up()
    return app, slug.id


def _manager(platform: Platform, dynos: FakeDynos, routes: list[RouteUpdate]) -> DynoManager:
    return DynoManager(
        platform.store,
        platform.slugs,
        dynos,  # type: ignore[arg-type]
        log_line=lambda *args: None,
        route=routes.append,
    )


def _settle(manager: DynoManager) -> None:
    """Wait for the stop threads (SIGTERM to exit) the last tick began."""
    deadline = time.monotonic() + 5
    while manager.stopping and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not manager.stopping


def test_without_preboot_the_old_web_dyno_stops_first_and_requests_are_held(
    platform: Platform,
    actor: Actor,
    shop: tuple[App, str],
    listening: tuple[str, int],  # noqa: F811
    closed_port: tuple[str, int],
) -> None:
    app, slug_id = shop
    dynos = BootingDynos(listening, closed_port)
    routes: list[RouteUpdate] = []
    manager = _manager(platform, dynos, routes)
    manager.tick()
    manager.tick()
    assert len(routes[-1].backends) == 2 and not routes[-1].sleeping

    dynos.slow_release = deploy(platform.ledger, actor, app.id, {"web": "x"}, slug_id=slug_id)
    platform.projector.catch_up()
    manager.tick()
    # The old dynos leave the router and get SIGTERM; nothing new starts yet; requests wait.
    assert routes[-1].backends == [] and routes[-1].sleeping and not routes[-1].crashed
    assert {s.release for s in dynos.started} == {2}
    _settle(manager)
    assert dynos.releases() == []  # both old dynos exited before any new one started
    manager.tick()
    assert dynos.releases() == [("web.1", 3), ("web.2", 3)]
    assert routes[-1].sleeping and routes[-1].backends == []  # held while they boot
    dynos.bind("web.1")
    manager.tick()
    assert [b[2] for b in routes[-1].backends] == ["web.1"] and not routes[-1].sleeping


def test_with_preboot_old_web_dynos_serve_until_every_new_one_is_up_then_all_switch(
    platform: Platform,
    actor: Actor,
    shop: tuple[App, str],
    listening: tuple[str, int],  # noqa: F811
    closed_port: tuple[str, int],
) -> None:
    app, slug_id = shop
    set_feature(platform.ledger, actor, app.id, PREBOOT, True)
    platform.projector.catch_up()
    dynos = BootingDynos(listening, closed_port)
    routes: list[RouteUpdate] = []
    manager = _manager(platform, dynos, routes)
    manager.tick()
    manager.tick()
    old = set(dynos.containers)

    dynos.slow_release = deploy(platform.ledger, actor, app.id, {"web": "x"}, slug_id=slug_id)
    platform.projector.catch_up()
    manager.tick()
    assert dynos.releases() == [("web.1", 2), ("web.1", 3), ("web.2", 2), ("web.2", 3)]
    assert len(routes[-1].backends) == 2 and not routes[-1].sleeping  # the old ones serve

    dynos.bind("web.1")  # one new dyno up: no switch yet
    manager.tick()
    manager.tick()
    assert not manager.stopping and old <= set(dynos.containers)
    assert len(routes[-1].backends) == 2 and not routes[-1].sleeping

    dynos.bind("web.2")  # every new dyno up: the router switches to them, the old ones stop
    manager.tick()
    assert all(c in manager.stopping or c not in dynos.containers for c in old)
    assert sorted(b[2] for b in routes[-1].backends) == ["web.1", "web.2"]
    _settle(manager)
    assert dynos.releases() == [("web.1", 3), ("web.2", 3)]


def test_the_release_phase_of_a_retried_release_gets_its_metadata(
    platform: Platform, tmp_path: Path
) -> None:
    api = Api(platform)
    slug_id = built_app(api, "retry-meta", RELEASE_TYPES)  # v2, commit 1a2b3c4d5e
    enabled = api.patch("/apps/retry-meta/features/runtime-dyno-metadata", json={"enabled": True})
    assert enabled.status_code == 200
    pending = api.post("/apps/retry-meta/releases", json={"slug": slug_id}).json()  # v3
    runtime = ScriptedRuntime([])
    assert release_phase(platform, runtime, tmp_path).run_pending(platform) == 1
    [run] = runtime.runs
    env = run["env"]
    assert env["HEROKU_RELEASE_VERSION"] == f"v{pending['version']}" == "v3"
    assert env["HEROKU_RELEASE_CREATED_AT"] == pending["created_at"]
    assert (env["HEROKU_APP_NAME"], env["HEROKU_SLUG_COMMIT"]) == ("retry-meta", "1a2b3c4d5e")
    assert env["HEROKU_SLUG_DESCRIPTION"] == "Deploy 1a2b3c4d"  # the release that deployed it
    UUID(env["HEROKU_DYNO_ID"])


def test_an_eco_app_does_not_fall_asleep_while_its_web_dyno_is_replaced(
    platform: Platform,
    actor: Actor,
    shop: tuple[App, str],
    listening: tuple[str, int],  # noqa: F811
    closed_port: tuple[str, int],
) -> None:
    app, slug_id = shop
    platform.ledger.scale(actor, app.id, [{"type": "web", "quantity": 1, "size": "eco"}])
    platform.projector.catch_up()
    dynos = BootingDynos(listening, closed_port)
    routes: list[RouteUpdate] = []
    manager = DynoManager(
        platform.store,
        platform.slugs,
        dynos,  # type: ignore[arg-type]
        log_line=lambda *args: None,
        route=routes.append,
        sleep_after=0.3,
    )
    manager.tick()
    manager.tick()
    dynos.slow_release = deploy(platform.ledger, actor, app.id, {"web": "x"}, slug_id=slug_id)
    platform.projector.catch_up()
    manager.tick()  # the old dyno stops first
    _settle(manager)
    for _ in range(3):  # longer than sleep_after without a request, while the new one boots
        time.sleep(0.2)
        manager.tick()
        assert not manager.asleep and routes[-1].sleeping  # held, not asleep
    dynos.bind("web.1")
    manager.tick()
    assert routes[-1].backends and not routes[-1].sleeping
    time.sleep(0.4)  # idle from here on: it sleeps
    manager.tick()
    assert str(app.id) in manager.asleep
