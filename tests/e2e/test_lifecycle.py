"""`waka up` as a process: Ctrl-C stops it cleanly, a restart resumes from the ledger, and the
same CLI flow works with the ledger on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import (
    OWNER_EMAIL,
    WakaServer,
    key_values,
    release_rows,
    section,
    unique_name,
)

pytestmark = pytest.mark.e2e


def test_restart_resumes_from_the_ledger(make_waka: Callable[..., WakaServer]) -> None:
    server = make_waka()
    name = unique_name("restart")
    server.heroku("apps:create", name)
    server.heroku("config:set", "FOO=bar", "BAZ=qux", "-a", name)
    server.heroku("maintenance:on", "-a", name)

    server.stop_cleanly()  # SIGINT, exit code 0 within 10 s
    server.start()  # a new `waka up` on the same WAKA_HOME

    out = server.heroku("apps").stdout
    assert f"=== {OWNER_EMAIL} Apps" in out
    assert name in out

    out = server.heroku("config", "-a", name).stdout
    assert key_values(section(out, f"{name} Config Vars")) == {"FOO": "bar", "BAZ": "qux"}

    assert server.heroku("maintenance", "-a", name).stdout.strip() == "on"

    # Writes carry on where the ledger stopped.
    err = server.heroku("config:unset", "BAZ", "-a", name).stderr
    assert f"Unsetting BAZ and restarting {name}... done, v3" in err
    out = server.heroku("releases", "-a", name).stdout
    assert f"=== {name} Releases - Current: v3" in out
    assert release_rows(out) == [
        (3, "Remove BAZ config vars", OWNER_EMAIL),
        (2, "Set FOO, BAZ config vars", OWNER_EMAIL),
        (1, "Initial release", OWNER_EMAIL),
    ]

    server.stop_cleanly()
    assert server.ledger_app(name).latest_release == 3


def test_cli_flow_on_postgresql(
    pg_schema_url: tuple[str, str], make_waka: Callable[..., WakaServer]
) -> None:
    url, schema = pg_schema_url
    server = make_waka(database_url=url, schema=schema)
    assert "ledger on PostgreSQL" in server.log()
    assert not (server.home / "ledger.sqlite").exists()

    name = unique_name("pg")
    err = server.heroku("apps:create", name).stderr
    assert f"Creating {name}... done" in err

    err = server.heroku("config:set", "FOO=bar", "BAZ=qux", "-a", name).stderr
    assert f"Setting FOO, BAZ and restarting {name}... done, v2" in err
    err = server.heroku("config:unset", "BAZ", "-a", name).stderr
    assert f"Unsetting BAZ and restarting {name}... done, v3" in err

    err = server.heroku("rollback", "v2", "-a", name).stderr
    assert f"Rolling back {name} to v2... done, v4" in err

    out = server.heroku("releases", "-a", name).stdout
    assert f"=== {name} Releases - Current: v4" in out
    assert [r[:2] for r in release_rows(out)] == [
        (4, "Rollback to v2"),
        (3, "Remove BAZ config vars"),
        (2, "Set FOO, BAZ config vars"),
        (1, "Initial release"),
    ]
    assert server.heroku("config:get", "BAZ", "-a", name).stdout == "qux\n"

    assert [e.action for e in server.audit("--app", name)][-2:] == [
        "Roll back to v2",
        "Release v4: Rollback to v2",
    ]
    app = server.ledger_app(name)
    assert app.latest_release == 4
    assert app.config == {"FOO": "bar", "BAZ": "qux"}

    server.stop_cleanly()  # before the schema is dropped
