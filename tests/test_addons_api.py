"""The add-ons API (Heroku v3 shapes), with the add-on manager driving an in-memory provider
swapped in at the composition root. Real PostgreSQL and Redis: test_addon_providers.py and
the end-to-end tests."""

from __future__ import annotations

import time

import pytest

from tests.test_api import Api, error_of
from waka.addons.catalogue import HEROKU_POSTGRESQL, HEROKU_REDIS, Plan, Service
from waka.addons.provider import ProviderError
from waka.bootstrap import Platform


class FakeProvider:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.resources: dict[str, str] = {}
        self.failures: list[ProviderError] = []  # raised by the next provision calls
        self.calls: list[str] = []

    def provision(self, addon_id: str, plan: Plan) -> dict[str, str]:
        self.calls.append(f"provision {addon_id}")
        if self.failures:
            raise self.failures.pop(0)
        scheme = "postgres" if self.service is HEROKU_POSTGRESQL else "redis"
        url = f"{scheme}://u:p-{addon_id[:8]}@localhost:5432/d{addon_id[:8]}"
        self.resources[addon_id] = url
        return {"URL": url}

    def deprovision(self, addon_id: str) -> None:
        self.calls.append(f"deprovision {addon_id}")
        self.resources.pop(addon_id, None)

    def ensure_running(self, addon_id: str, plan: Plan, config: dict[str, str]) -> None:
        pass

    def exists(self, addon_id: str) -> bool:
        return addon_id in self.resources

    def reset(self, addon_id: str) -> None:
        self.calls.append(f"reset {addon_id}")

    def kill_connections(self, addon_id: str) -> int:
        self.calls.append(f"kill {addon_id}")
        return 3


@pytest.fixture
def providers(platform: Platform) -> dict[str, FakeProvider]:
    fakes = {s.name: FakeProvider(s) for s in (HEROKU_POSTGRESQL, HEROKU_REDIS)}
    platform.__dict__["providers"] = fakes  # the composition root's slot for providers
    return fakes


@pytest.fixture
def api(platform: Platform, providers: dict[str, FakeProvider]) -> Api:
    return Api(platform)


def settle(api: Api) -> None:
    api.platform.addon_manager.first_retry = 0.01
    api.platform.addon_manager.settle()
    api.platform.projector.catch_up()


def create(api: Api, app: str, plan: str, **body) -> dict:
    response = api.post(f"/apps/{app}/addons", json={"plan": {"name": plan}, **body})
    assert response.status_code == 202, response.text  # no manager runs in the API's thread
    return response.json()


def test_catalogue(api: Api) -> None:
    services = api.get("/addon-services").json()
    # (third-party services registered by other tests in this process may be listed too)
    assert {s["name"] for s in services} >= {"heroku-postgresql", "heroku-redis"}
    plans = api.get("/addon-services/heroku-postgresql/plans").json()
    default = [p for p in plans if p["default"]]
    assert [p["name"] for p in default] == ["heroku-postgresql:essential-0"]
    assert default[0]["price"] == {"cents": 500, "contract": False, "unit": "month"}
    assert default[0]["limits"] == {"connections": 20, "storage_mb": 1024}
    redis = api.get("/addon-services/heroku-redis/plans/mini").json()
    assert redis["limits"]["memory_mb"] == 25
    assert error_of(api.get("/addon-services/mongodb"))[0] == 404


def test_create_provisions_attaches_and_releases(api: Api, providers) -> None:
    api.post("/apps", json={"name": "shop"})
    created = create(api, "shop", "heroku-postgresql:essential-0")
    assert created["state"] == "provisioning"
    assert created["plan"]["name"] == "heroku-postgresql:essential-0"
    assert created["billed_price"]["cents"] == 500
    assert created["app"]["name"] == "shop"
    settle(api)
    addon = api.get(f"/apps/shop/addons/{created['name']}").json()
    assert addon["state"] == "provisioned"
    assert addon["config_vars"][0] == "DATABASE_URL" and len(addon["config_vars"]) == 2
    config = api.get("/apps/shop/config-vars").json()
    url = providers["heroku-postgresql"].resources[addon["id"]]
    assert {k for k, v in config.items() if v == url} == set(addon["config_vars"])
    releases = api.get("/apps/shop/releases").json()
    assert releases[-1]["description"].startswith("Attach DATABASE, HEROKU_POSTGRESQL_")
    attachments = api.get("/apps/shop/addon-attachments").json()
    assert {a["name"] for a in attachments} == {v.removesuffix("_URL") for v in config}
    assert all(a["addon"]["plan"]["name"] == "heroku-postgresql:essential-0" for a in attachments)
    assert [a["plan"]["name"] for a in api.get("/addons").json()] == [
        "heroku-postgresql:essential-0"
    ]
    # The Data API the CLI's pg:info and pg:credentials:url read.
    info = api.get(f"/client/v11/databases/{addon['id']}").json()
    assert info["resource_url"] == url
    credentials = api.get(f"/postgres/v0/databases/{addon['name']}/credentials/default").json()
    assert credentials["credentials"][0]["user"] == "u"


def test_an_addon_create_sent_again_with_its_request_id_is_one_addon(api: Api, providers) -> None:
    """`heroku addons:create heroku-redis` without a name, sent again by the CLI after its
    connection broke: the same add-on (one resource, one release), not a second one."""
    api.post("/apps", json={"name": "shop"})
    sent = {"Request-Id": "5e0b4f6d-2a7c-4b1d-a9f8-4c5d6e7f8091"}
    body = {"plan": {"name": "heroku-redis:mini"}}
    first = api.post("/apps/shop/addons", json=body, headers=sent)
    again = api.post("/apps/shop/addons", json=body, headers=sent)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    settle(api)
    assert [a["id"] for a in api.get("/apps/shop/addons").json()] == [first.json()["id"]]
    assert len(providers["heroku-redis"].resources) == 1
    assert [r["version"] for r in api.get("/apps/shop/releases").json()] == [1, 2]
    # The same id for another add-on is refused; another id makes another add-on.
    other = {"plan": {"name": "heroku-postgresql:essential-0"}}
    assert error_of(api.post("/apps/shop/addons", json=other, headers=sent))[0] == 409
    fresh = {"Request-Id": "6f1c5a7e-3b8d-4c2e-b0a9-5d6e7f8091a2"}
    assert api.post("/apps/shop/addons", json=body, headers=fresh).status_code == 202
    settle(api)
    assert len(api.get("/apps/shop/addons").json()) == 2


def test_config_set_cannot_overwrite_and_rollback_warns(api: Api) -> None:
    api.post("/apps", json={"name": "shop"})
    api.patch("/apps/shop/config-vars", json={"A": "1"})  # v2
    create(api, "shop", "heroku-redis")
    settle(api)  # v3
    status, error_id, message = error_of(
        api.patch("/apps/shop/config-vars", json={"REDIS_URL": "redis://elsewhere"})
    )
    assert (status, error_id) == (422, "invalid_params") and "REDIS_URL" in message
    response = api.post("/apps/shop/releases", json={"release": "2"})
    assert response.status_code == 201
    assert "add-ons are not rolled back" in response.headers["X-Heroku-Warning"]
    assert "REDIS_URL" in api.get("/apps/shop/config-vars").json()


def test_attach_to_another_app_then_detach(api: Api) -> None:
    api.post("/apps", json={"name": "web-app"})
    api.post("/apps", json={"name": "worker-app"})
    addon = create(api, "web-app", "heroku-redis:premium-0", name="shared-cache")
    settle(api)
    response = api.post(
        "/addon-attachments",
        json={"addon": {"name": "shared-cache"}, "app": {"name": "worker-app"}, "name": "CACHE"},
    )
    assert response.status_code == 201, response.text
    attachment = response.json()
    assert attachment["name"] == "CACHE" and attachment["config_vars"] == ["CACHE_URL"]
    assert attachment["addon"]["app"]["name"] == "web-app"
    assert list(api.get("/apps/worker-app/config-vars").json()) == ["CACHE_URL"]
    listed = api.get("/apps/worker-app/addons").json()
    assert [(a["name"], a["app"]["name"]) for a in listed] == [("shared-cache", "web-app")]
    shown = api.get("/apps/worker-app/addon-attachments/CACHE").json()
    assert shown["id"] == attachment["id"]
    # The CLI's resolvers.
    resolved = api.post(
        "/actions/addon-attachments/resolve",
        json={"addon_attachment": "CACHE_URL", "app": "worker-app"},
    ).json()
    assert [r["id"] for r in resolved] == [attachment["id"]]
    by_name = api.post(
        "/actions/addons/resolve", json={"addon": "shared-cache", "app": "worker-app"}
    ).json()
    assert [r["id"] for r in by_name] == [addon["id"]]
    missing = api.post("/actions/addons/resolve", json={"addon": "nope", "app": "web-app"})
    assert missing.status_code == 404 and missing.json()["resource"] == "add_on"

    assert api.delete(f"/addon-attachments/{attachment['id']}").status_code == 200
    assert api.get("/apps/worker-app/config-vars").json() == {}
    assert api.get("/apps/worker-app/addons").json() == []


def test_rename_and_destroy(api: Api, providers) -> None:
    api.post("/apps", json={"name": "shop"})
    addon = create(api, "shop", "heroku-postgresql")
    settle(api)
    renamed = api.patch(f"/apps/shop/addons/{addon['id']}", json={"name": "shop-db"})
    assert renamed.json()["name"] == "shop-db"
    assert api.get("/addons/shop-db").json()["id"] == addon["id"]
    upgraded = api.patch(
        "/apps/shop/addons/shop-db", json={"plan": {"name": "heroku-postgresql:standard-0"}}
    )
    assert upgraded.status_code == 200, upgraded.text
    assert upgraded.json()["plan"]["name"] == "heroku-postgresql:standard-0"
    assert upgraded.json()["billed_price"]["cents"] == 5000
    wrong = api.patch("/apps/shop/addons/shop-db", json={"plan": "heroku-redis:mini"})
    assert error_of(wrong)[0] == 422

    destroyed = api.delete("/apps/shop/addons/shop-db")
    assert destroyed.status_code == 200 and destroyed.json()["state"] == "deprovisioned"
    assert api.get("/apps/shop/config-vars").json() == {}
    settle(api)
    assert providers["heroku-postgresql"].resources == {}
    assert error_of(api.get("/addons/shop-db"))[0] == 404


def test_destroying_the_app_deprovisions_its_add_ons(api: Api, providers) -> None:
    api.post("/apps", json={"name": "shop"})
    create(api, "shop", "heroku-postgresql")
    create(api, "shop", "heroku-redis")
    settle(api)
    assert len(providers["heroku-postgresql"].resources) == 1
    assert api.delete("/apps/shop").status_code == 200
    settle(api)
    assert providers["heroku-postgresql"].resources == {}
    assert providers["heroku-redis"].resources == {}
    assert api.get("/addons").json() == []


def test_failing_provider_is_retried_then_marked_failed(api: Api, providers) -> None:
    api.post("/apps", json={"name": "shop"})
    fake = providers["heroku-redis"]
    fake.failures = [ProviderError("connection refused")] * 2
    flaky = create(api, "shop", "heroku-redis")
    settle(api)
    assert api.get(f"/addons/{flaky['id']}").json()["state"] == "provisioned"

    fake.failures = [ProviderError("out of ports", retryable=False)]
    broken = create(api, "shop", "heroku-redis")
    settle(api)
    shown = api.get(f"/addons/{broken['id']}").json()
    assert shown["state"] == "deprovisioned"  # the CLI shows it as errored
    assert shown["provision_message"] == "out of ports"
    config = api.get("/apps/shop/config-vars").json()
    assert list(config) == ["REDIS_URL"]  # only the first one attached

    fake.failures = [ProviderError("timeout")] * 10
    given_up = create(api, "shop", "heroku-redis")
    settle(api)
    shown = api.get(f"/addons/{given_up['id']}").json()
    assert shown["provision_message"] == "timeout (after 5 attempts)"
    assert api.delete(f"/apps/shop/addons/{given_up['id']}").status_code == 200


def test_bad_requests(api: Api) -> None:
    api.post("/apps", json={"name": "shop"})
    huge = api.post("/apps/shop/addons", json={"plan": "heroku-postgresql:huge"})
    assert error_of(huge)[:2] == (422, "invalid_params")
    assert error_of(api.post("/apps/shop/addons", json={}))[0] == 422
    assert error_of(api.post("/apps/shop/addons", json={"plan": 5}))[0] == 422
    bad_name = api.post("/apps/shop/addons", json={"plan": "heroku-redis", "name": "a b"})
    assert error_of(bad_name)[0] == 422
    assert error_of(api.post("/apps/nope/addons", json={"plan": "heroku-redis"}))[0] == 404
    assert error_of(api.get("/apps/shop/addons/nope"))[0] == 404
    stranger = Api(api.platform, "stranger@example.com")
    create(api, "shop", "heroku-redis", name="mine")
    assert error_of(stranger.get("/addons/mine"))[0] == 404
    assert error_of(stranger.delete("/apps/shop/addons/mine"))[0] == 403


def test_a_manager_that_crashed_mid_way_is_repaired_by_the_next(api: Api, providers) -> None:
    """A crash between the provider's work and its ledger record: the next manager (a
    restarted waka) repeats the idempotent call and records it once."""
    from waka.addons.catalogue import HEROKU_POSTGRESQL as PG
    from waka.reactors.addon_manager import AddonManager

    api.post("/apps", json={"name": "shop"})
    addon = create(api, "shop", "heroku-postgresql")
    fake = providers["heroku-postgresql"]
    fake.provision(addon["id"], PG.default_plan)  # done, then the process died
    platform = api.platform
    restarted = AddonManager(platform.ledger, platform.store, platform.projector, providers)
    restarted.settle()
    platform.projector.catch_up()
    assert api.get(f"/addons/{addon['id']}").json()["state"] == "provisioned"
    assert len(fake.resources) == 1
    attaches = [
        r for r in api.get("/apps/shop/releases").json() if r["description"].startswith("Attach")
    ]
    assert len(attaches) == 1

    api.delete(f"/apps/shop/addons/{addon['id']}")
    fake.deprovision(addon["id"])  # removed, then the process died before recording it
    AddonManager(platform.ledger, platform.store, platform.projector, providers).settle()
    platform.projector.catch_up()
    assert fake.calls.count(f"deprovision {addon['id']}") == 2
    assert api.get("/addons").json() == []


def test_without_a_postgresql_server_the_add_on_fails_saying_why(make_platform, tmp_path):
    """The embedded default (SQLite, no WAKA_ADDONS_POSTGRES_URL): no server to make databases
    on, so the add-on fails at once, with the reason, and nothing is attached."""
    from waka.config import Settings

    platform = make_platform(Settings(home=tmp_path / "embedded"))
    api = Api(platform)
    api.post("/apps", json={"name": "shop"})
    addon = create(api, "shop", "heroku-postgresql")
    platform.addon_manager.settle()
    platform.projector.catch_up()
    shown = api.get(f"/addons/{addon['id']}").json()
    assert shown["state"] == "deprovisioned"
    assert "WAKA_ADDONS_POSTGRES_URL" in shown["provision_message"]
    assert api.get("/apps/shop/config-vars").json() == {}


def test_a_provider_that_crashes_is_retried_then_failed(api: Api, providers) -> None:
    class Crashing(FakeProvider):
        def provision(self, addon_id: str, plan: Plan) -> dict[str, str]:
            self.calls.append(f"provision {addon_id}")
            raise KeyError("boom")

    crashing = Crashing(HEROKU_REDIS)
    api.platform.providers["heroku-redis"] = crashing
    api.post("/apps", json={"name": "shop"})
    addon = create(api, "shop", "heroku-redis")
    settle(api)
    shown = api.get(f"/addons/{addon['id']}").json()
    assert shown["state"] == "deprovisioned"
    assert shown["provision_message"] == "provider error: 'boom' (after 5 attempts)"
    assert len(crashing.calls) == 5


def test_a_hung_provider_ends_failed_and_is_never_called_twice_at_once(api: Api, providers):
    import threading

    release = threading.Event()
    entered: list[str] = []

    class Hanging(FakeProvider):
        def provision(self, addon_id: str, plan: Plan) -> dict[str, str]:
            entered.append(addon_id)
            release.wait(30)
            return super().provision(addon_id, plan)

    api.platform.providers["heroku-postgresql"] = Hanging(HEROKU_POSTGRESQL)
    api.post("/apps", json={"name": "shop"})
    addon = create(api, "shop", "heroku-postgresql")
    api.platform.addon_manager.provision_timeout = 0.1
    api.platform.addon_manager.first_retry = 0.01
    deadline = time.monotonic() + 10
    while api.get(f"/addons/{addon['id']}").json()["state"] == "provisioning":
        assert time.monotonic() < deadline, "still provisioning"
        api.platform.addon_manager.tick()
        time.sleep(0.02)
    shown = api.get(f"/addons/{addon['id']}").json()
    assert shown["state"] == "deprovisioned"
    assert shown["provision_message"] == "the provider did not answer in 0.1 s (after 5 attempts)"
    assert entered == [addon["id"]]  # one call in flight, never a second beside it
    release.set()
    settle(api)
    assert entered == [addon["id"]]
    assert api.get("/apps/shop/config-vars").json() == {}  # a late answer attaches nothing


def test_pg_reset_and_killall_through_the_data_api(api: Api, providers) -> None:
    from waka.reactors.lifecycle import Reactors

    api.post("/apps", json={"name": "shop"})
    addon = create(api, "shop", "heroku-postgresql")
    settle(api)
    platform = api.platform
    reactors = Reactors(platform.leases, platform.projector.catch_up)
    reactors.add(platform.addon_manager, lease="addon-manager")  # woken by the ledger only
    platform.notifications.subscribe(reactors.saved)
    platform.notifications.start()
    reactors.start()
    try:
        fake = providers["heroku-postgresql"]
        url = api.get("/apps/shop/config-vars").json()["DATABASE_URL"]
        reset = api.put(f"/client/v11/databases/{addon['id']}/reset", json={})
        assert reset.status_code == 200, reset.text
        assert fake.calls.count(f"reset {addon['id']}") == 1
        assert api.get("/apps/shop/config-vars").json()["DATABASE_URL"] == url
        killed = api.post(f"/client/v11/databases/{addon['id']}/connection_reset", json={})
        assert killed.json()["message"] == f"Ended 3 connections to {addon['name']}."
        extensions = api.put(
            f"/client/v11/databases/{addon['id']}/reset", json={"extensions": ["postgis"]}
        )
        assert extensions.status_code == 422
    finally:
        reactors.stop()
        platform.notifications.stop()
    from uuid import UUID

    events = [type(e).__name__ for e in api.platform.ledger.events.get(UUID(addon["id"]))]
    assert events[-2:] == ["ResetRequested", "ResetDone"]


def test_waka_up_says_what_each_add_on_runs_on_without_passwords(make_platform, tmp_path):
    from waka.config import Settings
    from waka.roles import addon_summary

    secret = "postgresql://admin:hunter2@127.0.0.1:5432/postgres"
    with_server = make_platform(
        Settings(home=tmp_path / "a", runtime="process", addons_postgres_url=secret)
    )
    lines = addon_summary(with_server)
    assert (
        "add-on heroku-postgresql: postgresql://127.0.0.1:5432/postgres; dynos reach it at"
        + (" 127.0.0.1")
        in lines
    )
    assert not any("hunter2" in line or "admin" in line for line in lines)
    embedded = make_platform(Settings(home=tmp_path / "b", runtime="process"))
    assert any(
        "heroku-postgresql unavailable" in line and "WAKA_ADDONS_POSTGRES_URL" in line
        for line in addon_summary(embedded)
    )
