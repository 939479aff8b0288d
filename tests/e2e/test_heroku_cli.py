"""The official Heroku CLI against a running `waka up`: what it prints, and what the ledger holds.

All tests of this module share one server (the `server` fixture); each uses apps of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from .conftest import (
    OWNER_EMAIL,
    WakaServer,
    flat,
    key_values,
    release_rows,
    section,
    unique_name,
)

pytestmark = pytest.mark.e2e

NOT_FOUND = "Couldn't find that app."
NAME_RULES = (
    "Name must start with a letter, end with a letter or digit and can only contain "
    "lowercase letters, digits, and dashes"
)


def create_app(server: WakaServer, prefix: str, api_key: str | None = None) -> str:
    name = unique_name(prefix)
    _code, out, err = server.heroku("apps:create", name, api_key=api_key)
    assert f"Creating {name}... done" in err
    assert f"http://{name}.localhost:" in out  # the web URL, then the git URL
    assert f"/{name}.git" in out
    return name


def apps_listed(server: WakaServer, api_key: str | None = None) -> list[str]:
    out = server.heroku("apps", api_key=api_key).stdout
    if "You have no apps." in out:
        return []
    # "=== email Apps", then one app per line ("name (region)").
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


def test_create_list_info_rename(server: WakaServer) -> None:
    name = create_app(server, "info")

    assert name in apps_listed(server)

    out = server.heroku("apps:info", "-a", name).stdout
    assert out.startswith(f"=== {name}\n")
    info = key_values(out.splitlines())
    assert info["Owner"] == OWNER_EMAIL
    assert info["Region"] == "local"
    assert info["Stack"] == "waka-bookworm"
    assert info["Web URL"].startswith(f"http://{name}.localhost:")
    assert info["Git URL"] == f"http://localhost:{server.port}/{name}.git"

    new = unique_name("renamed")
    _code, out, err = server.heroku("apps:rename", new, "-a", name)
    assert f"Renaming {name} to {new}... done" in err
    assert f"http://{new}.localhost:" in out

    code, _out, err = server.heroku("apps:info", "-a", name, check=False)
    assert code != 0
    assert NOT_FOUND in flat(err)
    assert "Error ID: not_found" in flat(err)

    out = server.heroku("apps:info", new).stdout
    assert out.startswith(f"=== {new}\n")
    listed = apps_listed(server)
    assert new in listed
    assert name not in listed

    # The ledger: one app, renamed; both names find its history.
    actions = [e.action for e in server.audit("--app", new)]
    assert actions == [
        f"Create app {name}",
        "Release v1: Initial release",
        f"Rename {name} to {new}",
    ]
    assert [e.action for e in server.audit("--app", name)] == actions
    app = server.ledger_app(new)
    assert app.name == new
    assert server.app_ids(name) == server.app_ids(new)


def test_config_releases_and_rollback(server: WakaServer) -> None:
    name = create_app(server, "cfg")

    _code, out, err = server.heroku("config:set", "FOO=bar", "BAZ=qux", "-a", name)
    assert f"Setting FOO, BAZ and restarting {name}... done, v2" in err
    assert key_values(out.splitlines()) == {"FOO": "bar", "BAZ": "qux"}

    out = server.heroku("config", "-a", name).stdout
    assert key_values(section(out, f"{name} Config Vars")) == {"FOO": "bar", "BAZ": "qux"}

    assert server.heroku("config:get", "FOO", "-a", name).stdout == "bar\n"

    err = server.heroku("config:unset", "BAZ", "-a", name).stderr
    assert f"Unsetting BAZ and restarting {name}... done, v3" in err

    out = server.heroku("releases", "-a", name).stdout
    assert f"=== {name} Releases - Current: v3" in out
    assert release_rows(out) == [
        (3, "Remove BAZ config vars", OWNER_EMAIL),
        (2, "Set FOO, BAZ config vars", OWNER_EMAIL),
        (1, "Initial release", OWNER_EMAIL),
    ]

    # A past release's config vars: the ledger replayed to v2.
    out = server.heroku("releases:info", "v2", "-a", name).stdout
    info = key_values(section(out, "Release v2"))
    assert info["Change"] == "Set FOO, BAZ config vars"
    assert info["By"] == OWNER_EMAIL
    assert key_values(section(out, "v2 Config vars")) == {"FOO": "bar", "BAZ": "qux"}

    err = server.heroku("rollback", "v2", "-a", name).stderr
    assert f"Rolling back {name} to v2... done, v4" in err
    assert "To undo, run: heroku rollback v3" in flat(err)

    out = server.heroku("config", "-a", name).stdout
    assert key_values(section(out, f"{name} Config Vars")) == {"FOO": "bar", "BAZ": "qux"}

    out = server.heroku("releases", "-a", name).stdout
    assert f"=== {name} Releases - Current: v4" in out
    assert [r[:2] for r in release_rows(out)] == [
        (4, "Rollback to v2"),
        (3, "Remove BAZ config vars"),
        (2, "Set FOO, BAZ config vars"),
        (1, "Initial release"),
    ]

    # The ledger: every change and its release, in order, by the owner.
    entries = server.audit("--app", name)
    assert [e.action for e in entries] == [
        f"Create app {name}",
        "Release v1: Initial release",
        "Set FOO, BAZ config vars",
        "Release v2: Set FOO, BAZ config vars",
        "Remove BAZ config vars",
        "Release v3: Remove BAZ config vars",
        "Roll back to v2",
        "Release v4: Rollback to v2",
    ]
    assert {e.actor for e in entries} == {OWNER_EMAIL}
    app = server.ledger_app(name)
    assert app.latest_release == 4
    assert app.config == {"FOO": "bar", "BAZ": "qux"}


def test_scale_of_an_app_never_deployed_is_refused(server: WakaServer) -> None:
    # No slug, no process types: Heroku answers 404 (a deployed app's scaling is in
    # test_cli_edges.py).
    name = create_app(server, "scale")

    refused = server.heroku("ps:scale", "web=1:eco", "-a", name, check=False)
    assert refused.returncode != 0
    assert "Couldn't find that process type (web)." in flat(refused.stderr), refused

    listed = server.heroku("ps:scale", "-a", name, check=False)
    assert f"No process types on {name}." in flat(listed.stderr), listed
    assert [e.action for e in server.audit("--app", name)] == [
        f"Create app {name}",
        "Release v1: Initial release",
    ]
    app = server.ledger_app(name)
    assert app.formation == {}
    assert app.latest_release == 1


def test_maintenance_on_and_off(server: WakaServer) -> None:
    name = create_app(server, "maint")

    err = server.heroku("maintenance:on", "-a", name).stderr
    assert f"Enabling maintenance mode for {name}... done" in err
    assert server.heroku("maintenance", "-a", name).stdout == "on\n"
    assert server.ledger_app(name).maintenance is True

    err = server.heroku("maintenance:off", "-a", name).stderr
    assert f"Disabling maintenance mode for {name}... done" in err
    assert server.heroku("maintenance", "-a", name).stdout == "off\n"

    actions = [e.action for e in server.audit("--app", name)]
    assert actions[-2:] == ["Maintenance on", "Maintenance off"]
    app = server.ledger_app(name)
    assert app.maintenance is False
    assert app.latest_release == 1  # maintenance makes no release


def test_destroy_keeps_the_ledger_and_frees_the_name(server: WakaServer) -> None:
    name = create_app(server, "gone")
    server.heroku("config:set", "SECRET=s1", "-a", name)

    err = server.heroku("apps:destroy", "-a", name, "--confirm", name).stderr
    assert f"Destroying {name} (including all add-ons)... done" in err
    assert name not in apps_listed(server)
    code, _out, err = server.heroku("config", "-a", name, check=False)
    assert code != 0
    assert NOT_FOUND in flat(err)

    # The ledger keeps the destroyed app's history.
    actions = [e.action for e in server.audit("--app", name)]
    assert actions == [
        f"Create app {name}",
        "Release v1: Initial release",
        "Set SECRET config vars",
        "Release v2: Set SECRET config vars",
        f"Destroy app {name}",
    ]
    old = server.ledger_app(name)
    assert old.destroyed is True
    assert old.latest_release == 2

    # The name is free again; the new app's ledger starts again at v1.
    err = server.heroku("apps:create", name).stderr
    assert f"Creating {name}... done" in err
    out = server.heroku("releases", "-a", name).stdout
    assert f"=== {name} Releases - Current: v1" in out
    assert [r[:2] for r in release_rows(out)] == [(1, "Initial release")]
    out = server.heroku("config", "-a", name).stdout
    assert key_values(section(out, f"{name} Config Vars")) == {}

    ids = server.app_ids(name)
    assert len(ids) == 2, "the new app is a new ledger stream, the old one is kept"
    assert [e.action for e in server.audit("--app", name)][-2:] == [
        f"Create app {name}",
        "Release v1: Initial release",
    ]
    assert server.ledger_app(name).latest_release == 1
    assert server.ledger_app(name, index=0).destroyed is True


def test_whoami_and_an_invalid_api_key(server: WakaServer) -> None:
    out = server.heroku("auth:whoami").stdout
    assert out == f"{OWNER_EMAIL}\n"

    code, out, err = server.heroku("apps", check=False, api_key="HRKU-not-a-real-key")
    assert code != 0
    assert "The token provided to HEROKU_API_KEY is invalid" in flat(err)
    assert out == ""

    code, out, err = server.heroku("auth:whoami", check=False, api_key="HRKU-not-a-real-key")
    assert code != 0
    assert "Invalid credentials provided." in flat(err)
    assert OWNER_EMAIL not in out


def test_bad_input_is_refused_with_a_clear_message(server: WakaServer) -> None:
    code, _out, err = server.heroku("apps:create", "Bad_Name", check=False)
    assert code != 0
    assert NAME_RULES in flat(err)
    assert "Error ID: invalid_params" in flat(err)
    assert server.audit("--app", "Bad_Name") == []

    missing = unique_name("nosuchapp")
    code, _out, err = server.heroku("config:set", "FOO=bar", "-a", missing, check=False)
    assert code != 0
    assert NOT_FOUND in flat(err)
    assert server.audit("--app", missing) == []


def test_another_user_cannot_see_or_change_the_app(server: WakaServer) -> None:
    name = create_app(server, "private")
    intruder = f"intruder-{name}@example.com"
    key = server.create_user(intruder)
    forbidden = f"You do not have access to the app {name}."

    code, out, err = server.heroku("apps:info", "-a", name, check=False, api_key=key)
    assert code != 0
    assert forbidden in flat(err)
    assert out == ""

    code, _out, err = server.heroku("config:set", "EVIL=1", "-a", name, check=False, api_key=key)
    assert code != 0
    assert forbidden in flat(err)

    code, out, err = server.heroku(
        "apps:destroy", "-a", name, "--confirm", name, check=False, api_key=key
    )
    assert code != 0
    assert forbidden in flat(err)

    assert name not in apps_listed(server, api_key=key)

    # Nothing the intruder tried reached the ledger.
    assert server.audit("--app", name, "--actor", intruder) == []
    assert [e.action for e in server.audit("--app", name)] == [
        f"Create app {name}",
        "Release v1: Initial release",
    ]
    app = server.ledger_app(name)
    assert app.config == {}
    assert app.destroyed is False


def test_audit_lists_actions_with_actor_and_filters(server: WakaServer) -> None:
    name = create_app(server, "audit")
    server.heroku("config:set", "A=1", "-a", name)
    since = datetime.now(UTC)
    server.heroku("maintenance:on", "-a", name)

    other = f"other-{name}@example.com"
    other_key = server.create_user(other)
    theirs = create_app(server, "theirs", api_key=other_key)

    entries = server.audit("--app", name)
    assert [(e.actor, e.app, e.action) for e in entries] == [
        (OWNER_EMAIL, name, f"Create app {name}"),
        (OWNER_EMAIL, name, "Release v1: Initial release"),
        (OWNER_EMAIL, name, "Set A config vars"),
        (OWNER_EMAIL, name, "Release v2: Set A config vars"),
        (OWNER_EMAIL, name, "Maintenance on"),
    ]
    times = [e.at for e in entries]
    assert times == sorted(times)
    assert all(t.endswith("Z") for t in times)

    # --actor: only what that user did, on any app.
    mine = server.audit("--actor", other)
    assert [(e.actor, e.app, e.action) for e in mine] == [
        (other, theirs, f"Create app {theirs}"),
        (other, theirs, "Release v1: Initial release"),
    ]
    assert server.audit("--app", name, "--actor", other) == []
    assert server.audit("--app", theirs, "--actor", OWNER_EMAIL) == []

    # --since: only from that time on.
    iso = since.isoformat().replace("+00:00", "Z")
    assert [e.action for e in server.audit("--app", name, "--since", iso)] == ["Maintenance on"]
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert server.waka("audit", "--app", name, "--since", future).stdout == ""
    assert server.waka("audit", "--since", future).stdout == ""
