"""Add-ons in the ledger: provisioning, attachments, config vars, releases, removal, on both
event stores. The resource side (real PostgreSQL and Redis) is in test_addon_providers.py."""

import pytest

from waka.domain.addon import Addon
from waka.domain.errors import Conflict, InvalidParams, NameTaken, NotFound
from waka.projections.addons import addons_in_state, addons_of_app, attachments_of_app, find_addon
from waka.projections.config_vars import config_of
from waka.projections.releases import releases_of

DB_CONFIG = {"URL": "postgres://u1:secret@127.0.0.1:5432/d1"}


def provisioned(platform, actor, app, plan="heroku-postgresql", **kwargs) -> Addon:
    addon = platform.ledger.create_addon(actor, app.id, plan, **kwargs)
    assert platform.ledger.complete_provisioning(addon.id, DB_CONFIG, actor)
    platform.projector.catch_up()
    return platform.ledger.get_addon(addon.id)


def test_provisioning_attaches_config_vars_in_one_new_release(platform, actor):
    app = platform.ledger.create_app(actor, "shop")
    addon = platform.ledger.create_addon(actor, app.id, "heroku-postgresql:essential-0")
    platform.projector.catch_up()
    assert find_addon(platform.store, addon.name)["state"] == "provisioning"
    assert addon.name.startswith("postgresql-")
    assert config_of(platform.store, str(app.id)) == {}

    assert platform.ledger.complete_provisioning(addon.id, DB_CONFIG, actor)
    assert not platform.ledger.complete_provisioning(addon.id, DB_CONFIG, actor)  # a replay
    platform.projector.catch_up()
    config = config_of(platform.store, str(app.id))
    color = [k for k in config if k.startswith("HEROKU_POSTGRESQL_")]
    assert config["DATABASE_URL"] == DB_CONFIG["URL"]
    assert len(color) == 1 and config[color[0]] == DB_CONFIG["URL"]
    releases = releases_of(platform.store, str(app.id))
    assert len(releases) == 2
    assert releases[-1]["description"] == (
        f"Attach DATABASE, {color[0].removesuffix('_URL')} (@ref:{addon.name})"
    )
    row = find_addon(platform.store, addon.name)
    assert row["state"] == "provisioned"
    names = sorted(a["name"] for a in attachments_of_app(platform.store, str(app.id)))
    assert names == sorted(["DATABASE", color[0].removesuffix("_URL")])


def test_second_database_gets_only_a_colour_and_redis_gets_redis_url(platform, actor):
    app = platform.ledger.create_app(actor, "shop")
    provisioned(platform, actor, app)
    provisioned(platform, actor, app)
    provisioned(platform, actor, app, plan="heroku-redis:mini")
    config = config_of(platform.store, str(app.id))
    colors = [k for k in config if k.startswith("HEROKU_POSTGRESQL_")]
    assert len(colors) == 2 and "DATABASE_URL" in config and "REDIS_URL" in config
    assert len(addons_of_app(platform.store, str(app.id))) == 3


def test_unknown_plan_bad_names_and_taken_names_are_refused(platform, actor):
    app = platform.ledger.create_app(actor, "shop")
    with pytest.raises(InvalidParams, match="add-on service or the add-on plan"):
        platform.ledger.create_addon(actor, app.id, "heroku-postgresql:gigantic")
    with pytest.raises(InvalidParams):
        platform.ledger.create_addon(actor, app.id, "mongodb")
    with pytest.raises(InvalidParams):
        platform.ledger.create_addon(actor, app.id, "heroku-redis", name="no spaces")
    with pytest.raises(InvalidParams):
        platform.ledger.create_addon(actor, app.id, "heroku-redis", attachment_name="9LIVES")
    platform.ledger.create_addon(actor, app.id, "heroku-redis", name="cache")
    with pytest.raises(NameTaken):
        platform.ledger.create_addon(actor, app.id, "heroku-redis", name="cache")


def test_a_generated_name_that_is_taken_is_drawn_again(platform, actor, monkeypatch):
    """The first name drawn is taken: another is drawn, and the app, loaded again after the
    failed save, owns the one add-on made (with or without a request id)."""
    from waka import ledger as ledger_module

    app = platform.ledger.create_app(actor, "shop")
    monkeypatch.setattr(ledger_module.secrets, "choice", lambda words: words[0])
    draws = iter([0, 0, 1, 0, 1, 2])  # each create draws until a name is free
    monkeypatch.setattr(ledger_module.secrets, "randbelow", lambda _: next(draws))
    taken = platform.ledger.create_addon(actor, app.id, "heroku-redis")
    again = platform.ledger.create_addon(actor, app.id, "heroku-redis")
    assert again.name != taken.name and again.name.endswith("-10001")
    retried = {**actor, "request_id": "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"}
    made = platform.ledger.create_addon(retried, app.id, "heroku-redis")
    assert made.name.endswith("-10002")
    assert platform.ledger.create_addon(retried, app.id, "heroku-redis").id == made.id
    owned = platform.ledger.get_app(app.id).addons
    assert owned == [str(taken.id), str(again.id), str(made.id)]


def test_config_vars_of_an_add_on_cannot_be_overwritten(platform, actor):
    app = platform.ledger.create_app(actor, "shop")
    provisioned(platform, actor, app)
    with pytest.raises(InvalidParams, match="Cannot overwrite attachment values DATABASE_URL"):
        platform.ledger.set_config(actor, app.id, {"DATABASE_URL": "x"})
    with pytest.raises(InvalidParams):
        platform.ledger.set_config(actor, app.id, {"DATABASE_URL": None})


def test_rollback_keeps_the_add_ons_of_now(platform, actor):
    app = platform.ledger.create_app(actor, "shop")
    platform.ledger.set_config(actor, app.id, {"A": "1"})  # v2
    db = provisioned(platform, actor, app)  # v3
    platform.ledger.set_config(actor, app.id, {"A": "2"})  # v4
    platform.ledger.rollback(actor, app.id, 2)  # v5: back to A=1, but the database stays
    platform.projector.catch_up()
    config = config_of(platform.store, str(app.id))
    assert config["A"] == "1" and config["DATABASE_URL"] == DB_CONFIG["URL"]

    platform.ledger.destroy_addon(actor, db.id)  # v6
    platform.ledger.rollback(actor, app.id, 4)  # v7: the destroyed database does not return
    platform.projector.catch_up()
    config = config_of(platform.store, str(app.id))
    assert config == {"A": "2"}


def test_attach_to_a_second_app_with_its_own_name_and_detach(platform, actor):
    web = platform.ledger.create_app(actor, "web-app")
    worker = platform.ledger.create_app(actor, "worker-app")
    db = provisioned(platform, actor, web)
    attachment = platform.ledger.attach_addon(actor, db.id, worker.id, "main_db")
    platform.projector.catch_up()
    assert config_of(platform.store, str(worker.id)) == {"MAIN_DB_URL": DB_CONFIG["URL"]}
    assert [a["name"] for a in attachments_of_app(platform.store, str(worker.id))] == ["MAIN_DB"]
    assert [r["name"] for r in addons_of_app(platform.store, str(worker.id))] == [db.name]
    with pytest.raises(Conflict):
        platform.ledger.attach_addon(actor, db.id, worker.id, "MAIN_DB")

    platform.ledger.detach_addon(actor, db.id, attachment)
    platform.projector.catch_up()
    assert config_of(platform.store, str(worker.id)) == {}
    assert releases_of(platform.store, str(worker.id))[-1]["description"] == (
        f"Detach MAIN_DB (@ref:{db.name})"
    )


def test_destroying_an_add_on_detaches_everywhere_and_asks_for_removal(platform, actor):
    web = platform.ledger.create_app(actor, "web-app")
    worker = platform.ledger.create_app(actor, "worker-app")
    db = provisioned(platform, actor, web)
    platform.ledger.attach_addon(actor, db.id, worker.id)
    platform.ledger.destroy_addon(actor, db.id)
    platform.projector.catch_up()
    assert config_of(platform.store, str(web.id)) == {}
    assert config_of(platform.store, str(worker.id)) == {}
    assert [r["id"] for r in addons_in_state(platform.store, "deprovisioning")] == [str(db.id)]
    assert find_addon(platform.store, db.name) is None  # gone from the lists at once
    with pytest.raises(NotFound):
        platform.ledger.destroy_addon(actor, db.id)

    assert platform.ledger.finish_deprovisioning(db.id, actor)
    assert not platform.ledger.finish_deprovisioning(db.id, actor)
    platform.projector.catch_up()
    assert addons_in_state(platform.store, "deprovisioning") == []
    # The name is free again.
    platform.ledger.create_addon(actor, web.id, "heroku-postgresql", name=db.name)


def test_destroying_the_app_removes_its_add_ons_and_its_attachments(platform, actor):
    web = platform.ledger.create_app(actor, "web-app")
    worker = platform.ledger.create_app(actor, "worker-app")
    own = provisioned(platform, actor, web)
    pending = platform.ledger.create_addon(actor, web.id, "heroku-redis")
    platform.ledger.attach_addon(actor, own.id, worker.id)
    foreign = provisioned(platform, actor, worker, plan="heroku-redis")
    platform.ledger.attach_addon(actor, foreign.id, web.id, "CACHE")

    platform.ledger.destroy_app(actor, web.id)
    platform.projector.catch_up()
    deprovisioning = {r["id"] for r in addons_in_state(platform.store, "deprovisioning")}
    assert deprovisioning == {str(own.id), str(pending.id)}
    assert set(config_of(platform.store, str(worker.id))) == {"REDIS_URL"}
    assert platform.ledger.get_addon(foreign.id).attachments_on(str(web.id)) == []
    # A provisioning add-on that the app's destruction overtook is not attached afterwards.
    assert not platform.ledger.complete_provisioning(pending.id, DB_CONFIG, actor)


def test_failed_provisioning_is_visible_and_attaches_nothing(platform, actor):
    app = platform.ledger.create_app(actor, "shop")
    addon = platform.ledger.create_addon(actor, app.id, "heroku-redis")
    assert platform.ledger.fail_provisioning(addon.id, "redis-server is not installed", actor)
    platform.projector.catch_up()
    row = find_addon(platform.store, addon.name)
    assert (row["state"], row["message"]) == ("failed", "redis-server is not installed")
    assert not platform.ledger.complete_provisioning(addon.id, DB_CONFIG, actor)
    assert config_of(platform.store, str(app.id)) == {}
    assert len(releases_of(platform.store, str(app.id))) == 1
    platform.ledger.destroy_addon(actor, addon.id)  # a failed add-on can be removed


def test_rename_and_other_users(platform, actor, make_actor):
    app = platform.ledger.create_app(actor, "shop")
    db = provisioned(platform, actor, app)
    platform.ledger.rename_addon(actor, db.id, "shop-db")
    platform.projector.catch_up()
    assert find_addon(platform.store, "shop-db")["id"] == str(db.id)
    assert find_addon(platform.store, db.name) is None
    stranger = make_actor("stranger@example.com")
    theirs = platform.ledger.create_app(stranger, "theirs")
    from waka.domain.errors import Forbidden

    with pytest.raises(Forbidden):
        platform.ledger.destroy_addon(stranger, db.id)
    with pytest.raises(Forbidden):
        platform.ledger.attach_addon(stranger, db.id, theirs.id)


def test_the_app_log_tells_of_its_add_ons(platform, actor):
    from waka.logplex.logplex import Logplex
    from waka.reactors.api_log import ApiLog

    app = platform.ledger.create_app(actor, "shop")
    logplex = Logplex()
    api_log = ApiLog(platform.ledger, logplex)
    db = provisioned(platform, actor, app, name="shop-db")
    broken = platform.ledger.create_addon(actor, app.id, "heroku-redis", name="shop-cache")
    platform.ledger.fail_provisioning(broken.id, "redis-server is not installed", actor)
    platform.ledger.destroy_addon(actor, db.id)
    platform.ledger.finish_deprovisioning(db.id, actor)
    api_log.poll()
    lines = [x.message for x in logplex.recent(str(app.id), lines=100)]
    by = f"by {actor['email']}"
    assert lines[0] == f"Provisioning heroku-postgresql:essential-0 (shop-db) {by}"
    assert lines[1].startswith("Attach DATABASE, HEROKU_POSTGRESQL_") and lines[1].endswith(by)
    assert f"Provisioning heroku-redis:mini (shop-cache) {by}" in lines
    assert "Add-on shop-cache failed to provision: redis-server is not installed" in lines
    assert lines[-3].startswith("Detach DATABASE, HEROKU_POSTGRESQL_")
    assert lines[-1] == "Add-on shop-db deprovisioned"


def test_releases_list_the_add_on_plans_and_the_read_models_rebuild_the_same(platform, actor):
    web = platform.ledger.create_app(actor, "web-app")
    worker = platform.ledger.create_app(actor, "worker-app")
    db = provisioned(platform, actor, web)
    cache = provisioned(platform, actor, web, plan="heroku-redis:premium-0")
    platform.ledger.attach_addon(actor, db.id, worker.id, "SHARED")
    platform.ledger.rollback(actor, web.id, 1)
    platform.ledger.destroy_addon(actor, cache.id)
    failed = platform.ledger.create_addon(actor, web.id, "heroku-redis")
    platform.ledger.fail_provisioning(failed.id, "no", actor)
    platform.ledger.rename_addon(actor, db.id, "main-db")
    platform.projector.catch_up()
    plans = [
        (r["version"], r["addon_plan_names"]) for r in releases_of(platform.store, str(web.id))
    ]
    assert plans == [
        (1, "[]"),
        (2, '["heroku-postgresql:essential-0"]'),
        (3, '["heroku-postgresql:essential-0","heroku-redis:premium-0"]'),
        (4, '["heroku-postgresql:essential-0","heroku-redis:premium-0"]'),  # the rollback
        (5, '["heroku-postgresql:essential-0"]'),
    ]
    assert releases_of(platform.store, str(worker.id))[-1]["addon_plan_names"] == (
        '["heroku-postgresql:essential-0"]'
    )
    live = platform.projector.dump()
    platform.projector.rebuild()
    assert platform.projector.dump() == live


def test_plan_change_keeps_the_resource_and_makes_no_release(platform, actor):
    app = platform.ledger.create_app(actor, "shop")
    cache = provisioned(platform, actor, app, plan="heroku-redis:mini")
    releases_before = len(releases_of(platform.store, str(app.id)))
    platform.ledger.change_addon_plan(actor, cache.id, "premium-1")
    platform.ledger.change_addon_plan(actor, cache.id, "heroku-redis:premium-1")  # no change
    with pytest.raises(InvalidParams, match="heroku-redis add-on"):
        platform.ledger.change_addon_plan(actor, cache.id, "heroku-postgresql:essential-1")
    with pytest.raises(InvalidParams, match="add-on plan"):
        platform.ledger.change_addon_plan(actor, cache.id, "gigantic")
    platform.projector.catch_up()
    assert find_addon(platform.store, cache.name)["plan"] == "premium-1"
    assert platform.ledger.get_addon(cache.id).config == DB_CONFIG
    assert len(releases_of(platform.store, str(app.id))) == releases_before
    platform.ledger.set_config(actor, app.id, {"A": "1"})
    platform.projector.catch_up()
    assert releases_of(platform.store, str(app.id))[-1]["addon_plan_names"] == (
        '["heroku-redis:premium-1"]'
    )
    pending = platform.ledger.create_addon(actor, app.id, "heroku-redis")
    with pytest.raises(InvalidParams, match="provisioning"):
        platform.ledger.change_addon_plan(actor, pending.id, "premium-0")


def test_concurrent_add_ons_on_one_app_get_distinct_names(platform, actor):
    from concurrent.futures import ThreadPoolExecutor

    app = platform.ledger.create_app(actor, "shop")
    with ThreadPoolExecutor(4) as pool:
        addons = list(
            pool.map(
                lambda _: platform.ledger.create_addon(actor, app.id, "heroku-postgresql"),
                range(4),
            )
        )
    with ThreadPoolExecutor(4) as pool:  # the add-on manager's four workers, at once
        complete = platform.ledger.complete_provisioning
        done = list(pool.map(lambda a: complete(a.id, DB_CONFIG, actor), addons))
    assert done == [True] * 4
    platform.projector.catch_up()
    names = [a["name"] for a in attachments_of_app(platform.store, str(app.id))]
    assert len(names) == len(set(names)) == 5  # DATABASE once, and four colours
    assert names.count("DATABASE") == 1
    config = config_of(platform.store, str(app.id))
    assert len(config) == 5
    assert len(releases_of(platform.store, str(app.id))) == 5
