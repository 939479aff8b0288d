"""The read models: built incrementally, rebuilt from scratch, followed by other processes."""

import threading

import pytest

from tests.deploys import deploy
from waka.domain import rules
from waka.domain.account import hash_api_key
from waka.domain.app import formation_id, release_id
from waka.projections.accounts import account_by_key_hash
from waka.projections.apps import apps_owned_by, find_app
from waka.projections.config_vars import config_of
from waka.projections.formation import find_formation, formation_of
from waka.projections.projector import Projector
from waka.projections.releases import find_release, releases_of
from waka.projections.sealing import Sealer
from waka.projections.store import SqliteReadStore


def make_history(ledger):
    """A realistic ledger: users, apps, config, scale, rename, maintenance, rollback, destroy."""
    alice_account, _ = ledger.register_user("alice@example.com", name="Alice")
    bob_account, bob_key = ledger.register_user("bob@example.com")
    _, alice_key = ledger.regenerate_api_key("alice@example.com")
    alice, bob = alice_account.as_actor(), bob_account.as_actor()

    shop = ledger.create_app(alice, "shop")
    ledger.set_config(alice, shop.id, {"DATABASE_URL": "postgres://db/shop", "DEBUG": "1"})  # v2
    ledger.set_config(alice, shop.id, {"DEBUG": None, "WORKERS": 4})  # v3
    deploy(ledger, alice, shop.id)  # v4: a slug with web and worker
    ledger.scale(
        alice, shop.id, [{"type": "web", "quantity": 2}, {"type": "worker", "quantity": 1}]
    )
    ledger.scale(alice, shop.id, [{"type": "web", "size": "performance-m"}])
    ledger.set_maintenance(alice, shop.id, True)
    ledger.rename_app(alice, shop.id, "web-shop")
    ledger.rollback(alice, shop.id, 2)  # v5
    ledger.set_config(alice, shop.id, {"FEATURE_X": "on"})  # v6

    blog = ledger.create_app(bob, "blog")
    ledger.set_config(bob, blog.id, {"THEME": "dark"})
    gone = ledger.create_app(bob, "gone-app")
    ledger.set_config(bob, gone.id, {"SECRET": "x"})
    deploy(ledger, bob, gone.id, {"web": "python app.py"}, slug_id="slug-2")
    ledger.scale(bob, gone.id, [{"type": "web", "quantity": 1}])
    ledger.destroy_app(bob, gone.id)
    ledger.create_app(bob, "gone-app")  # the name again, a new app
    return {
        "alice": alice,
        "bob": bob,
        "alice_key": alice_key,
        "bob_key": bob_key,
        "shop": shop.id,
        "blog": blog.id,
        "gone": gone.id,
    }


def latest_notification(platform):
    return platform.ledger.recorder.max_notification_id()


def positions(platform):
    rows = platform.store.query("SELECT name, position FROM waka_positions ORDER BY name")
    return {r["name"]: r["position"] for r in rows}


def row_counts(platform):
    return {table: len(rows) for table, rows in platform.projector.dump().items()}


def test_read_models_after_a_realistic_history(platform):
    h = make_history(platform.ledger)
    assert platform.projector.is_behind()
    applied = platform.projector.catch_up()
    assert applied == latest_notification(platform)
    assert not platform.projector.is_behind()
    assert set(positions(platform).values()) == {latest_notification(platform)}
    store = platform.store
    shop = str(h["shop"])

    # Apps: by id and by name; a destroyed app is gone, its name is a new app's.
    by_id, by_name = find_app(store, shop), find_app(store, "web-shop")
    assert by_id == by_name
    assert by_id["name"] == "web-shop"
    assert by_id["owner_email"] == "alice@example.com"
    assert by_id["maintenance"] == 1
    assert by_id["current_release"] == 6
    assert (by_id["region"], by_id["stack"]) == (rules.DEFAULT_REGION, rules.DEFAULT_STACK)
    assert find_app(store, "shop") is None
    assert find_app(store, str(h["gone"])) is None
    assert find_app(store, "gone-app")["id"] != str(h["gone"])
    assert find_app(store, "no-such-app") is None
    assert [a["name"] for a in apps_owned_by(store, h["bob"]["id"])] == ["blog", "gone-app"]
    assert [a["name"] for a in apps_owned_by(store, h["alice"]["id"])] == ["web-shop"]

    # Releases, in version order, with who made them.
    releases = releases_of(store, shop)
    assert [(r["version"], r["description"]) for r in releases] == [
        (1, "Initial release"),
        (2, "Set DATABASE_URL, DEBUG config vars"),
        (3, "Set WORKERS config vars and remove DEBUG config vars"),
        (4, "Deploy"),
        (5, "Rollback to v2"),
        (6, "Set FEATURE_X config vars"),
    ]
    assert {r["user_email"] for r in releases} == {"alice@example.com"}
    assert [r["id"] for r in releases] == [str(release_id(h["shop"], v)) for v in range(1, 7)]
    assert find_release(store, shop, "v5")["description"] == "Rollback to v2"
    assert find_release(store, shop, "5") == find_release(store, shop, releases[4]["id"])
    assert find_release(store, shop, "v9") is None
    assert releases_of(store, str(h["gone"])) == []

    # Config vars: the rollback restored v2's, numbers were strings.
    assert config_of(store, shop) == {
        "DATABASE_URL": "postgres://db/shop",
        "DEBUG": "1",
        "FEATURE_X": "on",
    }
    assert config_of(store, str(h["blog"])) == {"THEME": "dark"}
    assert config_of(store, str(h["gone"])) == {}

    # Formation: no releases, sizes canonical.
    formation = formation_of(store, shop)
    assert [(f["type"], f["quantity"], f["size"]) for f in formation] == [
        ("web", 2, "Performance-M"),
        ("worker", 1, rules.DEFAULT_SIZE),
    ]
    assert formation[0]["id"] == str(formation_id(h["shop"], "web"))
    assert find_formation(store, shop, "worker") == formation[1]
    assert find_formation(store, shop, formation[0]["id"]) == formation[0]
    assert formation_of(store, str(h["gone"])) == []

    # Accounts: looked up by the hash of the current key only.
    alice = account_by_key_hash(store, hash_api_key(h["alice_key"]))
    assert (alice["email"], alice["name"], alice["id"]) == (
        "alice@example.com",
        "Alice",
        h["alice"]["id"],
    )
    assert account_by_key_hash(store, hash_api_key(h["bob_key"]))["email"] == "bob@example.com"
    assert account_by_key_hash(store, hash_api_key("HRKU-wrong")) is None


def test_releases_of_is_in_version_order(platform, actor):
    app = platform.ledger.create_app(actor, "many-releases")
    for i in range(12):
        platform.ledger.set_config(actor, app.id, {"N": str(i)})
    platform.projector.catch_up()
    assert [r["version"] for r in releases_of(platform.store, str(app.id))] == list(range(1, 14))


def test_rebuild_gives_the_same_read_models(platform):
    make_history(platform.ledger)
    platform.projector.catch_up()
    before = platform.projector.dump()
    assert sum(len(rows) for rows in before.values()) > 10

    assert platform.projector.rebuild() == latest_notification(platform)
    assert platform.projector.dump() == before
    assert set(positions(platform).values()) == {latest_notification(platform)}


def test_incremental_catch_ups_equal_one_build_from_scratch(platform, tmp_path):
    # Catch up after every command (as the API does), then build a separate store at once.
    ledger = platform.ledger
    catch_up = platform.projector.catch_up
    account, _ = ledger.register_user("inc@example.com")
    actor = account.as_actor()
    catch_up()
    app = ledger.create_app(actor, "stepwise")
    catch_up()
    for step in [
        lambda: ledger.set_config(actor, app.id, {"A": "1"}),
        lambda: deploy(ledger, actor, app.id, {"web": "python app.py"}),
        lambda: ledger.scale(actor, app.id, [{"type": "web", "quantity": 3}]),
        lambda: ledger.rename_app(actor, app.id, "stepwise-2"),
        lambda: ledger.set_config(actor, app.id, {"A": None, "B": "2"}),
        lambda: ledger.rollback(actor, app.id, 2),
        lambda: ledger.set_maintenance(actor, app.id, True),
    ]:
        step()
        assert catch_up() > 0
    make_history(ledger)
    catch_up()

    sealer = Sealer(platform.settings.cipher_key)  # the key the platform's first start made
    fresh_store = SqliteReadStore(tmp_path / "fresh.sqlite", sealer=sealer)
    try:
        fresh = Projector(ledger, fresh_store)
        fresh.setup()
        fresh.catch_up()
        assert fresh.dump() == platform.projector.dump()
    finally:
        fresh_store.close()


def test_another_process_catches_up_with_writes_it_did_not_make(platform, make_platform):
    other = make_platform()  # a second process on the same stores (the `waka` CLI, say)
    h = make_history(platform.ledger)  # written by the first, not caught up there
    assert other.projector.is_behind()
    assert other.projector.catch_up() == latest_notification(platform)
    assert find_app(other.store, "web-shop")["id"] == str(h["shop"])

    # The first process's projector finds the shared read models current: nothing twice.
    assert platform.projector.catch_up() == 0
    assert platform.projector.dump() == other.projector.dump()

    # And the other way round.
    app = other.ledger.create_app(h["bob"], "from-other")
    other.ledger.set_config(h["bob"], app.id, {"X": "1"})
    # Claimed, Created, Released (v1), ConfigChanged, Released (v2)
    assert platform.projector.catch_up() == 5
    assert config_of(platform.store, str(app.id)) == {"X": "1"}
    assert other.projector.catch_up() == 0


def test_concurrent_catch_ups_by_several_processes_apply_each_event_once(platform, make_platform):
    followers = [platform, make_platform(), make_platform()]
    h = make_history(platform.ledger)
    errors = []

    def follow(p, barrier):
        barrier.wait(timeout=30)
        try:
            p.projector.catch_up()
        except Exception as exc:
            errors.append(exc)

    for round_ in range(5):
        app = platform.ledger.create_app(h["alice"], f"round-{round_}")
        for i in range(10):
            platform.ledger.set_config(h["alice"], app.id, {f"K{i}": str(i)})
        barrier = threading.Barrier(len(followers))
        threads = [threading.Thread(target=follow, args=(p, barrier)) for p in followers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        assert not platform.projector.is_behind()

    incremental = platform.projector.dump()
    platform.projector.rebuild()
    assert platform.projector.dump() == incremental


@pytest.mark.parametrize("caught_up_before_stop", [True, False])
def test_positions_resume_after_a_restart(platform, make_platform, caught_up_before_stop):
    h = make_history(platform.ledger)
    if caught_up_before_stop:
        platform.projector.catch_up()
        counts = row_counts(platform)
        dump = platform.projector.dump()
    platform.close()

    restarted = make_platform()  # bootstrap again on the same home / schema; it catches up
    assert positions(restarted) == dict.fromkeys(
        [p.name for p in restarted.projector.projections], latest_notification(restarted)
    )
    assert restarted.projector.catch_up() == 0
    if caught_up_before_stop:
        assert row_counts(restarted) == counts
        assert restarted.projector.dump() == dump
    assert find_app(restarted.store, "web-shop")["current_release"] == 6

    # New writes after the restart are applied once, on top.
    restarted.ledger.set_config(h["alice"], h["shop"], {"AFTER": "restart"})
    assert restarted.projector.catch_up() == 2
    assert [r["version"] for r in releases_of(restarted.store, str(h["shop"]))] == [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
    ]

    again = make_platform()
    assert again.projector.catch_up() == 0
    assert again.projector.dump() == restarted.projector.dump()
