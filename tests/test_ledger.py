"""The Ledger application's commands, on both event stores (SQLite and PostgreSQL)."""

import zlib
from uuid import uuid4

import pytest

from tests.deploys import deploy
from waka.domain import rules
from waka.domain.account import Account, hash_api_key
from waka.domain.app import App
from waka.domain.errors import Conflict, Forbidden, InvalidParams, NameTaken, NotFound
from waka.domain.names import AppName
from waka.projections.accounts import account_by_key_hash
from waka.projections.apps import find_app
from waka.projections.config_vars import config_of
from waka.projections.releases import releases_of


def stored_states(platform):
    """The state of every stored event, as written (compressed, and encrypted with the key the
    platform's first start made) and in plain."""
    cipher = platform.ledger.mapper.cipher
    notifications = platform.ledger.recorder.select_notifications(start=1, limit=1000)
    assert len(notifications) < 1000
    return [
        (n.state, zlib.decompress(cipher.decrypt(n.state) if cipher else n.state))
        for n in notifications
    ]


def release_events(platform, app_id):
    return [e for e in platform.ledger.events.get(app_id) if isinstance(e, App.Released)]


# --- apps ------------------------------------------------------------------------------------


def test_create_app_is_stored_and_projected(platform, actor):
    app = platform.ledger.create_app(actor, "my-app")
    loaded = platform.ledger.get_app(app.id)
    assert (loaded.name, loaded.owner, loaded.region, loaded.stack) == (
        "my-app",
        actor,
        rules.DEFAULT_REGION,
        rules.DEFAULT_STACK,
    )
    assert loaded.current_release == 1
    assert [(e.version, e.description) for e in release_events(platform, app.id)] == [
        (1, "Initial release")
    ]
    index = platform.ledger.repository.get(AppName.id_for("my-app"))
    assert index.app_id == app.id

    platform.projector.catch_up()
    row = find_app(platform.store, "my-app")
    assert row is not None
    assert row["id"] == str(app.id)
    assert row["current_release"] == 1


def test_create_app_checks_name_region_and_stack(platform, actor):
    with pytest.raises(InvalidParams):
        platform.ledger.create_app(actor, "Not_A_Name")
    with pytest.raises(InvalidParams, match="region"):
        platform.ledger.create_app(actor, "my-app", region="eu")
    with pytest.raises(InvalidParams, match="stack"):
        platform.ledger.create_app(actor, "my-app", stack="heroku-24")
    # Nothing was stored for the refused commands, so the name is still free.
    assert platform.ledger.create_app(actor, "my-app").name == "my-app"


def test_duplicate_app_name_is_refused(platform, actor, make_actor):
    first = platform.ledger.create_app(actor, "taken-name")
    other = make_actor("other@example.com")
    for who in (actor, other):
        with pytest.raises(NameTaken, match="Name taken-name is already taken") as info:
            platform.ledger.create_app(who, "taken-name")
        assert info.value.error_id == "invalid_params"
    # The refused creations stored no app: only one Created event for that name.
    created = [e for e in platform.ledger.events.get(first.id)]
    assert isinstance(created[0], App.Created)
    platform.projector.catch_up()
    rows = platform.store.query("SELECT id FROM waka_apps WHERE name = ?", ("taken-name",))
    assert rows == [{"id": str(first.id)}]
    assert platform.store.query("SELECT count(*) AS n FROM waka_apps")[0]["n"] == 1


def test_destroyed_apps_name_is_free_again_and_its_ledger_is_kept(platform, actor):
    old = platform.ledger.create_app(actor, "reuse-me")
    platform.ledger.set_config(actor, old.id, {"FOO": "old"})
    platform.ledger.destroy_app(actor, old.id)
    new = platform.ledger.create_app(actor, "reuse-me")
    assert new.id != old.id

    kept = platform.ledger.repository.get(old.id)
    assert kept.destroyed is True
    assert kept.name == "reuse-me"
    assert kept.config == {"FOO": "old"}
    assert [type(e).__name__ for e in platform.ledger.events.get(old.id)] == [
        "Created",
        "Released",
        "ConfigChanged",
        "Released",
        "Destroyed",
    ]
    assert platform.ledger.get_app(new.id).destroyed is False
    assert platform.ledger.repository.get(AppName.id_for("reuse-me")).app_id == new.id

    # The old app takes no more commands; the new one does.
    with pytest.raises(NotFound):
        platform.ledger.set_config(actor, old.id, {"FOO": "again"})
    with pytest.raises(NotFound):
        platform.ledger.destroy_app(actor, old.id)
    platform.ledger.set_config(actor, new.id, {"FOO": "new"})

    platform.projector.catch_up()
    assert find_app(platform.store, "reuse-me")["id"] == str(new.id)
    assert find_app(platform.store, str(old.id)) is None
    assert config_of(platform.store, str(new.id)) == {"FOO": "new"}
    assert config_of(platform.store, str(old.id)) == {}


def test_rename_frees_the_old_name_and_claims_the_new_one(platform, actor, make_actor):
    app = platform.ledger.create_app(actor, "old-name")
    renamed = platform.ledger.rename_app(actor, app.id, "new-name")
    assert renamed.name == "new-name"
    assert platform.ledger.get_app(app.id).name == "new-name"
    assert platform.ledger.repository.get(AppName.id_for("old-name")).app_id is None
    assert platform.ledger.repository.get(AppName.id_for("new-name")).app_id == app.id

    with pytest.raises(NameTaken):
        platform.ledger.create_app(make_actor("other@example.com"), "new-name")
    reused = platform.ledger.create_app(actor, "old-name")
    assert reused.id != app.id

    platform.projector.catch_up()
    assert find_app(platform.store, "new-name")["id"] == str(app.id)
    assert find_app(platform.store, "old-name")["id"] == str(reused.id)


def test_rename_to_a_taken_name_changes_nothing(platform, actor):
    app = platform.ledger.create_app(actor, "first-app")
    platform.ledger.create_app(actor, "second-app")
    with pytest.raises(NameTaken):
        platform.ledger.rename_app(actor, app.id, "second-app")
    assert platform.ledger.get_app(app.id).name == "first-app"
    # The old name is still claimed: the refused rename freed nothing.
    with pytest.raises(NameTaken):
        platform.ledger.create_app(actor, "first-app")
    with pytest.raises(InvalidParams):
        platform.ledger.rename_app(actor, app.id, "Bad Name")


def test_rename_back_and_forth(platform, actor):
    app = platform.ledger.create_app(actor, "name-a")
    platform.ledger.rename_app(actor, app.id, "name-b")
    platform.ledger.rename_app(actor, app.id, "name-a")
    assert platform.ledger.rename_app(actor, app.id, "name-a").name == "name-a"  # no-op
    assert platform.ledger.get_app(app.id).name == "name-a"
    assert platform.ledger.repository.get(AppName.id_for("name-a")).app_id == app.id
    assert platform.ledger.repository.get(AppName.id_for("name-b")).app_id is None


def test_generated_names_match_herokus_pattern(platform, actor):
    apps = [platform.ledger.create_app(actor) for _ in range(5)]
    names = [a.name for a in apps]
    for name in names:
        assert rules.APP_NAME.fullmatch(name), name
        assert platform.ledger.repository.get(AppName.id_for(name)).app_id is not None
    assert len(set(names)) == 5


def test_only_the_owner_may_act_on_an_app(platform, actor, make_actor):
    app = platform.ledger.create_app(actor, "owned-app")
    stranger = make_actor("stranger@example.com")
    commands = [
        lambda: platform.ledger.set_config(stranger, app.id, {"FOO": "1"}),
        lambda: platform.ledger.scale(stranger, app.id, [{"type": "web", "quantity": 1}]),
        lambda: platform.ledger.set_maintenance(stranger, app.id, True),
        lambda: platform.ledger.rename_app(stranger, app.id, "stolen-app"),
        lambda: platform.ledger.rollback(stranger, app.id, 1),
        lambda: platform.ledger.destroy_app(stranger, app.id),
    ]
    for command in commands:
        with pytest.raises(Forbidden, match="owned-app"):
            command()
    assert len(list(platform.ledger.events.get(app.id))) == 2
    assert platform.ledger.get_app(app.id).name == "owned-app"
    # The refused rename claimed nothing: the name is still free.
    platform.ledger.create_app(actor, "stolen-app")


def test_unknown_app_is_not_found(platform, actor):
    with pytest.raises(NotFound):
        platform.ledger.get_app(uuid4())
    with pytest.raises(NotFound):
        platform.ledger.set_config(actor, uuid4(), {"FOO": "1"})
    # An id of another kind of aggregate is not an app either.
    with pytest.raises(NotFound):
        platform.ledger.get_app(Account.id_for("owner@example.com"))


def test_scale_and_maintenance_make_no_release(platform, actor):
    app = platform.ledger.create_app(actor, "my-app")
    assert deploy(platform.ledger, actor, app.id, {"web": "python app.py"}) == 2
    platform.ledger.scale(actor, app.id, [{"type": "web", "quantity": 2, "size": "eco"}])
    platform.ledger.set_maintenance(actor, app.id, True)
    loaded = platform.ledger.get_app(app.id)
    assert loaded.formation == {"web": {"quantity": 2, "size": "Eco"}}
    assert loaded.maintenance is True
    assert [e.version for e in release_events(platform, app.id)] == [1, 2]


# --- releases and rollback -------------------------------------------------------------------


def test_rollback_restores_a_release_config_as_a_new_release(platform, actor):
    app = platform.ledger.create_app(actor, "my-app")
    platform.ledger.set_config(actor, app.id, {"FOO": "1", "KEEP": "k"})  # v2
    platform.ledger.set_config(actor, app.id, {"FOO": "2", "BAR": "x", "KEEP": None})  # v3
    rolled = platform.ledger.rollback(actor, app.id, 2)
    assert rolled.config == {"FOO": "1", "KEEP": "k"}
    assert rolled.current_release == 4

    loaded = platform.ledger.get_app(app.id)
    assert loaded.config == {"FOO": "1", "KEEP": "k"}
    assert [(e.version, e.description) for e in release_events(platform, app.id)] == [
        (1, "Initial release"),
        (2, "Set FOO, KEEP config vars"),
        (3, "Set FOO, BAR config vars and remove KEEP config vars"),
        (4, "Rollback to v2"),
    ]
    # Nothing was rewritten: v3 is still in the ledger with its own config.
    assert platform.ledger.config_at_release(app.id, 3) == {"FOO": "2", "BAR": "x"}
    assert platform.ledger.config_at_release(app.id, 4) == {"FOO": "1", "KEEP": "k"}

    platform.projector.catch_up()
    assert config_of(platform.store, str(app.id)) == {"FOO": "1", "KEEP": "k"}
    releases = releases_of(platform.store, str(app.id))
    assert [(r["version"], r["description"]) for r in releases][-1] == (4, "Rollback to v2")
    assert releases[-1]["user_email"] == "owner@example.com"
    assert find_app(platform.store, "my-app")["current_release"] == 4


def test_rollback_to_v1_empties_the_config(platform, actor):
    app = platform.ledger.create_app(actor, "my-app")
    platform.ledger.set_config(actor, app.id, {"FOO": "1"})
    assert platform.ledger.rollback(actor, app.id, 1).config == {}
    assert [e.description for e in release_events(platform, app.id)][-1] == "Rollback to v1"


@pytest.mark.parametrize("version", [0, -1, 3, 99])
def test_rollback_to_an_unknown_release_is_not_found(platform, actor, version):
    app = platform.ledger.create_app(actor, "my-app")
    platform.ledger.set_config(actor, app.id, {"FOO": "1"})
    with pytest.raises(NotFound, match="release"):
        platform.ledger.rollback(actor, app.id, version)
    assert [e.version for e in release_events(platform, app.id)] == [1, 2]


def test_rollback_of_a_destroyed_app_is_not_found(platform, actor):
    app = platform.ledger.create_app(actor, "my-app")
    platform.ledger.set_config(actor, app.id, {"FOO": "1"})
    platform.ledger.destroy_app(actor, app.id)
    with pytest.raises(NotFound, match="app"):
        platform.ledger.rollback(actor, app.id, 1)


def test_config_at_release(platform, actor):
    app = platform.ledger.create_app(actor, "my-app")
    platform.ledger.set_config(actor, app.id, {"A": "1"})  # v2
    platform.ledger.set_maintenance(actor, app.id, True)  # no release
    platform.ledger.set_config(actor, app.id, {"B": "2"})  # v3
    platform.ledger.set_config(actor, app.id, {"A": None})  # v4
    assert [platform.ledger.config_at_release(app.id, v) for v in (1, 2, 3, 4)] == [
        {},
        {"A": "1"},
        {"A": "1", "B": "2"},
        {"B": "2"},
    ]
    for missing in (0, 5):
        with pytest.raises(NotFound):
            platform.ledger.config_at_release(app.id, missing)


# --- accounts --------------------------------------------------------------------------------


def test_register_user_twice_is_a_conflict(platform):
    account, key = platform.ledger.register_user("Someone@Example.com", name="Some One")
    assert account.email == "someone@example.com"
    assert account.as_actor() == {"id": str(account.id), "email": "someone@example.com"}
    for again in ("someone@example.com", "SOMEONE@example.COM"):
        with pytest.raises(Conflict, match="already exists"):
            platform.ledger.register_user(again)
    assert platform.ledger.get_account("someone@example.com").key_hash == hash_api_key(key)
    with pytest.raises(InvalidParams):
        platform.ledger.register_user("not-an-email")
    with pytest.raises(NotFound):
        platform.ledger.get_account("nobody@example.com")


def test_api_keys_are_stored_only_as_hashes(platform):
    account, key = platform.ledger.register_user("keyed@example.com")
    account, new_key = platform.ledger.regenerate_api_key("keyed@example.com")
    assert new_key != key
    assert key.startswith("HRKU-") and len(key) > 40

    states = stored_states(platform)
    assert len(states) == 2
    stored = b"".join(raw + b"\0" + plain for raw, plain in states)
    for k in (key, new_key):
        assert k.encode() not in stored
        assert k.split("-", 1)[1].encode() not in stored
    # The check can see what is stored: the hashes are there, decompressed.
    assert hash_api_key(key).encode() in stored
    assert hash_api_key(new_key).encode() in stored

    platform.projector.catch_up()
    assert account_by_key_hash(platform.store, hash_api_key(key)) is None
    row = account_by_key_hash(platform.store, hash_api_key(new_key))
    assert row is not None
    assert row["email"] == "keyed@example.com"
    assert row["id"] == str(account.id)
