"""The App aggregate and Heroku's rules, as pure domain code: no database, no ledger."""

import pytest

from waka.domain import rules
from waka.domain.app import App
from waka.domain.errors import DomainError, Forbidden, InvalidParams, NotFound

OWNER = {"id": "11111111-1111-1111-1111-111111111111", "email": "owner@example.com"}
OTHER = {"id": "22222222-2222-2222-2222-222222222222", "email": "other@example.com"}


def new_app(name="my-app"):
    return App.create(name=name, owner=OWNER, region="local", stack="waka-bookworm")


def deployed_app(name="my-app"):
    """An app whose current slug declares web and worker (a deploy sets them; set directly)."""
    app = new_app(name)
    app.process_types = {"web": "gunicorn app:app", "worker": "python worker.py"}
    return app


def released(app):
    """(version, description) of each release the app has made and not yet saved."""
    return [(e.version, e.description) for e in app.pending_events if isinstance(e, App.Released)]


def event_names(app):
    return [type(e).__name__ for e in app.pending_events]


# --- app names -------------------------------------------------------------------------------

GOOD_NAMES = [
    "abc",
    "my-app",
    "a1b",
    "app-2",
    "a--b",
    "x0y",
    "a" * 30,
    "a" + "-" * 28 + "b",
]
BAD_NAMES = [
    "",
    "a",
    "ab",  # too short: 3 characters at least
    "a" * 31,  # too long: 30 at most
    "1abc",  # must start with a letter
    "-abc",
    "abc-",  # must end with a letter or digit
    "My-App",  # lowercase only
    "my_app",
    "my app",
    "my.app",
    "mÿ-app",
    " abc",
    None,
    123,
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_app_names_are_accepted(name):
    assert rules.check_app_name(name) == name
    assert new_app(name).name == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_app_names_are_refused(name):
    with pytest.raises(InvalidParams, match="Name must start with a letter"):
        rules.check_app_name(name)


@pytest.mark.parametrize(
    "check",
    [
        lambda: rules.check_app_name("abc\n"),
        lambda: rules.check_config_changes({"FOO\n": "x"}),
        lambda: rules.check_process_type("web\n"),
        lambda: rules.check_email("someone@example.com\n"),
    ],
    ids=["app-name", "config-key", "process-type", "email"],
)
def test_a_trailing_newline_is_refused(check):
    # `$` alone would match before a final newline: the rules must match the whole text.
    with pytest.raises(InvalidParams):
        check()


def test_rename_checks_the_new_name_and_records_old_and_new():
    app = new_app("old-name")
    with pytest.raises(InvalidParams):
        app.rename("Bad_Name", OWNER)
    assert app.name == "old-name"
    app.rename("new-name", OWNER)
    assert app.name == "new-name"
    renamed = [e for e in app.pending_events if isinstance(e, App.Renamed)]
    assert [(e.old_name, e.new_name, e.actor) for e in renamed] == [("old-name", "new-name", OWNER)]
    # Renaming to the current name records nothing and makes no release.
    before = len(app.pending_events)
    app.rename("new-name", OWNER)
    assert len(app.pending_events) == before
    assert released(app) == [(1, "Initial release")]


# --- config vars -----------------------------------------------------------------------------

GOOD_KEYS = ["FOO", "foo", "_X", "DATABASE_URL", "A1", "_", "k" * 256]
BAD_KEYS = ["", "1FOO", "FOO-BAR", "FOO BAR", "FOO.BAR", "FÖO", "$FOO", "k" * 257]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_good_config_keys_are_accepted(key):
    app = new_app()
    app.set_config({key: "v"}, OWNER)
    assert app.config == {key: "v"}


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_config_keys_are_refused(key):
    app = new_app()
    with pytest.raises(InvalidParams, match="Invalid config var name"):
        app.set_config({key: "v"}, OWNER)
    assert app.config == {}
    assert released(app) == [(1, "Initial release")]


@pytest.mark.parametrize(
    ("value", "stored"), [("text", "text"), ("", ""), (5, "5"), (0, "0"), (1.5, "1.5")]
)
def test_config_values_are_strings_and_numbers_are_coerced(value, stored):
    app = new_app()
    app.set_config({"KEY": value}, OWNER)
    assert app.config == {"KEY": stored}
    assert isinstance(app.config["KEY"], str)


@pytest.mark.parametrize("value", [True, False, [], ["a"], {}, {"a": "b"}, object()])
def test_config_values_of_other_types_are_refused(value):
    app = new_app()
    with pytest.raises(InvalidParams, match="expected a string or null"):
        app.set_config({"KEY": value}, OWNER)
    assert app.config == {}


def test_config_must_be_an_object():
    app = new_app()
    for bad in (None, [], "FOO=1", [("FOO", "1")]):
        with pytest.raises(InvalidParams, match="JSON object"):
            app.set_config(bad, OWNER)


def test_null_unsets_a_config_var_and_unknown_unset_is_harmless():
    app = new_app()
    app.set_config({"FOO": "1", "BAR": "2"}, OWNER)
    app.set_config({"FOO": None, "NEVER_SET": None}, OWNER)
    assert app.config == {"BAR": "2"}


def test_config_total_size_limit_is_32_kilobytes():
    assert rules.CONFIG_TOTAL_LIMIT == 32 * 1024
    app = new_app()
    # Exactly at the limit: key "K" (1 byte) + 32767 bytes of value.
    app.set_config({"K": "x" * (32 * 1024 - 1)}, OWNER)
    assert len(app.config["K"]) == 32 * 1024 - 1
    # One byte more anywhere is refused, and nothing changes.
    with pytest.raises(InvalidParams, match="limit is 32768 bytes"):
        app.set_config({"L": ""}, OWNER)  # +1 byte of key
    assert set(app.config) == {"K"}
    assert app.latest_release == 2


def test_config_size_counts_bytes_not_characters():
    app = new_app()
    with pytest.raises(InvalidParams, match="32769 bytes"):
        app.set_config({"K": "é" * (16 * 1024)}, OWNER)  # 1 + 2 * 16384 bytes
    assert app.config == {}


def test_config_size_limit_applies_to_the_merged_config():
    app = new_app()
    app.set_config({"A": "a" * 20_000}, OWNER)
    with pytest.raises(InvalidParams):
        app.set_config({"B": "b" * 20_000}, OWNER)
    # Replacing A in the same patch keeps the total under the limit.
    app.set_config({"A": None, "B": "b" * 20_000}, OWNER)
    assert app.config == {"B": "b" * 20_000}


# --- releases --------------------------------------------------------------------------------


def test_create_makes_release_v1_initial_release():
    app = new_app()
    assert event_names(app) == ["Created", "Released"]
    assert released(app) == [(1, "Initial release")]
    assert app.current_release == 1
    assert app.latest_release == 1
    assert app.config == {}
    created = app.pending_events[0]
    assert created.actor == OWNER
    assert app.owner == OWNER


def test_config_changes_make_releases_with_heroku_descriptions():
    app = new_app()
    assert app.set_config({"FOO": "1", "BAR": "2"}, OWNER) == 2
    assert app.set_config({"FOO": None}, OWNER) == 3
    assert app.set_config({"BAZ": "3", "BAR": None}, OWNER) == 4
    assert released(app) == [
        (1, "Initial release"),
        (2, "Set FOO, BAR config vars"),
        (3, "Remove FOO config vars"),
        (4, "Set BAZ config vars and remove BAR config vars"),
    ]
    assert app.config == {"BAZ": "3"}
    assert app.current_release == 4


def test_every_release_records_its_actor():
    app = new_app()
    app.set_config({"FOO": "1"}, OTHER)
    releases = [e for e in app.pending_events if isinstance(e, App.Released)]
    assert [r.actor for r in releases] == [OWNER, OTHER]


def test_empty_config_patch_makes_no_release():
    app = new_app()
    assert app.set_config({}, OWNER) == 1
    assert event_names(app) == ["Created", "Released"]


def test_formation_changes_make_no_release():
    app = deployed_app()
    assert app.scale([{"type": "web", "quantity": 2}], OWNER) == ["web"]
    app.scale([{"type": "web", "size": "performance-m"}, {"type": "worker", "quantity": 1}], OWNER)
    assert released(app) == [(1, "Initial release")]
    assert app.latest_release == 1
    assert app.formation == {
        "web": {"quantity": 2, "size": "Performance-M"},
        "worker": {"quantity": 1, "size": rules.DEFAULT_SIZE},
    }
    assert event_names(app).count("FormationChanged") == 2


def test_release_positions_locate_each_release_in_the_ledger():
    app = deployed_app()
    app.set_config({"FOO": "1"}, OWNER)
    app.scale([{"type": "web", "quantity": 1}], OWNER)
    app.set_config({"FOO": "2"}, OWNER)
    versions = {
        e.version: e.originator_version for e in app.pending_events if isinstance(e, App.Released)
    }
    for release, position in versions.items():
        assert app.aggregate_version_of(release) == position
    for missing in (0, -1, 4, 99):
        with pytest.raises(NotFound, match=f"v{missing}"):
            app.aggregate_version_of(missing)


def replay(events):
    """The aggregate as it stood after `events` (what the repository does)."""
    aggregate = None
    for e in events:
        aggregate = e.mutate(aggregate)
    return aggregate


def test_rollback_restores_config_and_makes_a_new_release():
    app = new_app()
    app.set_config({"FOO": "1"}, OWNER)
    app.set_config({"FOO": "2", "BAR": "x"}, OWNER)
    history = list(app.pending_events)
    target = replay(history[: app.aggregate_version_of(2)])
    assert target.current_release == 2
    assert app.rollback(target, 2, OTHER) == 4
    assert app.config == {"FOO": "1"}
    assert released(app)[-1] == (4, "Rollback to v2")
    rolled = [e for e in app.pending_events if isinstance(e, App.RolledBack)]
    assert [(e.target_version, e.config, e.actor) for e in rolled] == [(2, {"FOO": "1"}, OTHER)]


def test_rollback_refuses_a_target_that_is_not_that_release_of_this_app():
    app = new_app()
    app.set_config({"FOO": "1"}, OWNER)
    with pytest.raises(InvalidParams):
        app.rollback(new_app("other-app"), 1, OWNER)
    with pytest.raises(InvalidParams):  # the app at v2 is not "v1"
        app.rollback(replay(app.pending_events), 1, OWNER)
    assert app.latest_release == 2


# --- maintenance -----------------------------------------------------------------------------


def test_maintenance_toggles_and_records_only_changes():
    app = new_app()
    assert app.maintenance is False
    app.set_maintenance(True, OWNER)
    assert app.maintenance is True
    app.set_maintenance(True, OWNER)  # no change, no event
    app.set_maintenance(False, OWNER)
    assert app.maintenance is False
    changes = [e.enabled for e in app.pending_events if isinstance(e, App.MaintenanceChanged)]
    assert changes == [True, False]
    assert app.latest_release == 1


@pytest.mark.parametrize("value", ["true", 1, 0, None])
def test_maintenance_must_be_a_boolean(value):
    app = new_app()
    with pytest.raises(InvalidParams, match="true or false"):
        app.set_maintenance(value, OWNER)
    assert app.maintenance is False


# --- destroy ---------------------------------------------------------------------------------


def test_destroyed_app_refuses_every_command_with_not_found():
    app = new_app()
    app.set_config({"FOO": "1"}, OWNER)
    target = replay(app.pending_events[: app.aggregate_version_of(1)])
    app.destroy(OWNER)
    assert app.destroyed is True
    destroyed = [e for e in app.pending_events if isinstance(e, App.Destroyed)]
    assert [(e.name, e.actor) for e in destroyed] == [("my-app", OWNER)]
    commands = [
        lambda: app.set_config({"BAR": "2"}, OWNER),
        lambda: app.scale([{"type": "web", "quantity": 1}], OWNER),
        lambda: app.rename("new-name", OWNER),
        lambda: app.set_maintenance(True, OWNER),
        lambda: app.rollback(target, 1, OWNER),
        lambda: app.destroy(OWNER),
    ]
    events_before = len(app.pending_events)
    for command in commands:
        with pytest.raises(NotFound, match="Couldn't find that app"):
            command()
    assert len(app.pending_events) == events_before
    assert app.config == {"FOO": "1"}
    assert app.name == "my-app"


# --- access ----------------------------------------------------------------------------------


def test_only_the_owner_has_access():
    app = new_app("private-app")
    app.check_access(OWNER)
    with pytest.raises(Forbidden, match="private-app") as info:
        app.check_access(OTHER)
    assert info.value.error_id == "forbidden"
    with pytest.raises(Forbidden):
        app.check_access({"id": "", "email": OWNER["email"]})  # same email, other id


def test_domain_errors_carry_heroku_error_ids_and_messages():
    with pytest.raises(DomainError) as info:
        new_app().set_config({"1BAD": "v"}, OWNER)
    assert info.value.error_id == "invalid_params"
    assert info.value.message == str(info.value)
    assert NotFound("x").error_id == "not_found"


# --- scale -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "quantity"), [(0, 0), (1, 1), (100, 100), ("3", 3), (" 4 ", 4), ("0", 0)]
)
def test_quantity_in_range_is_accepted(given, quantity):
    app = deployed_app()
    app.scale([{"type": "web", "quantity": given}], OWNER)
    assert app.formation["web"]["quantity"] == quantity


@pytest.mark.parametrize(
    "quantity", [-1, 101, 1000, True, False, 1.5, "1.5", "two", "", "+101", "-1", [2]]
)
def test_quantity_out_of_range_or_not_whole_is_refused(quantity):
    app = deployed_app()
    with pytest.raises(InvalidParams, match=r"(?i)quantity"):
        app.scale([{"type": "web", "quantity": quantity}], OWNER)
    assert app.formation == {}


def test_relative_quantity_changes_the_current_quantity():
    app = deployed_app()
    app.scale([{"type": "web", "quantity": "+2"}], OWNER)
    assert app.formation["web"]["quantity"] == 2
    app.scale([{"type": "web", "quantity": "+3"}], OWNER)
    assert app.formation["web"]["quantity"] == 5
    app.scale([{"type": "web", "quantity": "-1"}], OWNER)
    assert app.formation["web"]["quantity"] == 4
    with pytest.raises(InvalidParams, match="between 0 and 100"):
        app.scale([{"type": "web", "quantity": "-5"}], OWNER)
    with pytest.raises(InvalidParams, match="between 0 and 100"):
        app.scale([{"type": "web", "quantity": "+97"}], OWNER)
    assert app.formation["web"]["quantity"] == 4
    # The event records the resulting quantity, not the relative change.
    changes = [e.updates for e in app.pending_events if isinstance(e, App.FormationChanged)]
    assert changes[-1] == [{"type": "web", "quantity": 4}]


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("eco", "Eco"),
        ("BASIC", "Basic"),
        ("standard-1x", "Standard-1X"),
        ("Standard-2X", "Standard-2X"),
        ("PERFORMANCE-L", "Performance-L"),
        ("performance-l-ram", "Performance-L-RAM"),
    ],
)
def test_size_names_are_case_insensitive(given, size):
    app = deployed_app()
    app.scale([{"type": "web", "size": given}], OWNER)
    assert app.formation["web"] == {"quantity": 0, "size": size}


@pytest.mark.parametrize("size", ["Huge", "standard-3x", "", 2, "Standard 1X"])
def test_unknown_sizes_are_refused(size):
    app = deployed_app()
    with pytest.raises(InvalidParams, match="Invalid dyno size"):
        app.scale([{"type": "web", "size": size}], OWNER)


@pytest.mark.parametrize(
    "updates",
    [
        [],
        {"type": "web", "quantity": 1},
        ["web"],
        [{"type": "web"}],  # neither quantity nor size
        [{"type": "web", "quantity": None, "size": None}],
        [{"quantity": 1}],  # no type
        [{"type": "web worker", "quantity": 1}],
        [{"type": "w" * 129, "quantity": 1}],
    ],
)
def test_malformed_formation_updates_are_refused(updates):
    app = deployed_app()
    with pytest.raises(InvalidParams):
        app.scale(updates, OWNER)
    assert "FormationChanged" not in event_names(app)


def test_a_bad_update_refuses_the_whole_batch():
    app = deployed_app()
    with pytest.raises(InvalidParams):
        app.scale([{"type": "web", "quantity": 2}, {"type": "worker", "quantity": -1}], OWNER)
    assert app.formation == {}


def test_an_app_never_deployed_has_no_process_type_to_scale():
    app = new_app()  # no slug: no process types, as on Heroku
    for updates in (
        [{"type": "web", "quantity": 1, "size": "eco"}],
        [{"type": "web", "size": "eco"}],
    ):
        with pytest.raises(NotFound, match=r"^Couldn't find that process type \(web\)\.$"):
            app.scale(updates, OWNER)
    assert app.formation == {}
    assert "FormationChanged" not in event_names(app)


def test_unknown_process_type_is_refused_once_process_types_are_known():
    app = new_app()
    # A deploy sets the slug's process types (Procfile); set them directly here.
    app.process_types = {"web": "gunicorn app:app", "worker": "python worker.py"}
    app.scale([{"type": "worker", "quantity": 3}], OWNER)
    assert app.formation["worker"]["quantity"] == 3
    with pytest.raises(NotFound, match="clock"):
        app.scale([{"type": "clock", "quantity": 1}], OWNER)
    assert "clock" not in app.formation
