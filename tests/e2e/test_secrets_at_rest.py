"""Secrets at rest with a real `waka up` and the real Heroku CLI, no WAKA_CIPHER_KEY given:
the first start makes the home's key (0600) in a home that is waka's user's alone (0700), and
a value set with `heroku config:set` (or a token from `heroku authorizations:create`) is in no
raw store file or table in clear. A ledger written in clear by an older waka keeps working
until `waka cipher-key rotate` encrypts it. On PostgreSQL, a second host of the same ledger
needs the first one's key: without it, it refuses to start and says why; with it, it reads
the ledger."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.raw_stores import in_clear
from waka.config import Settings
from waka.ledger import Ledger

from .conftest import OWNER_EMAIL, WakaServer, key_values, section, unique_name

pytestmark = pytest.mark.e2e


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def settings_of(server: WakaServer) -> Settings:
    return Settings(
        home=server.home,
        database_url=server.database_url,
        database_schema=server.database_schema or "public",
    )


def set_secrets(server: WakaServer) -> tuple[str, str, str]:
    """An app with a secret config var, and a long-lived token: (app, value, token)."""
    name = unique_name("secret")
    value = f"sup3r-{uuid.uuid4().hex}"
    server.heroku("apps:create", name)
    server.heroku("config:set", f"SECRET={value}", "-a", name)
    made = server.heroku("authorizations:create", "-d", "CI", "--json")
    token = json.loads(made.stdout)["access_token"]["token"]
    return name, value, token


def config_of(server: WakaServer, name: str) -> dict[str, str]:
    return key_values(section(server.heroku("config", "-a", name).stdout, f"{name} Config Vars"))


def test_the_home_and_its_stores_hold_no_secret_in_clear(server: WakaServer) -> None:
    name, value, token = set_secrets(server)
    home = server.home

    key_file = home / "cipher.key"
    assert mode(key_file) == 0o600
    assert mode(home) == 0o700
    for private in ("ledger.sqlite", "projections.sqlite"):
        assert mode(home / private) == 0o600, private
    assert mode(home / "tls") == 0o700
    assert mode(home / "tls" / "ca.key") == mode(home / "tls" / "server.key") == 0o600
    assert f"encrypted with the key in {key_file}" in server.log()
    assert key_file.read_text().strip() not in server.log()

    assert config_of(server, name)["SECRET"] == value  # it is all there, read back
    assert in_clear(settings_of(server), value, token) == set()


def test_a_second_host_of_a_postgresql_ledger_needs_the_first_ones_key(
    pg_schema_url: tuple[str, str], make_waka: Callable[..., WakaServer]
) -> None:
    url, schema = pg_schema_url
    first = make_waka(database_url=url, schema=schema)
    name, value, token = set_secrets(first)
    assert in_clear(settings_of(first), value, token) == set()  # tables and files alike
    key = (first.home / "cipher.key").read_text().strip()

    second_home = first.home.parent / "second-host"
    second = WakaServer(second_home, first.cli_home, first.heroku_cli, url, schema)
    second_home.mkdir()
    refused = second.waka("audit", check=False)
    assert refused.returncode == 1
    assert "the ledger is encrypted and there is no key" in refused.stderr
    assert "WAKA_CIPHER_KEY" in refused.stderr and "Traceback" not in refused.stderr
    assert not (second_home / "cipher.key").exists()  # no key of its own that cannot open it

    second.extra_env = {"WAKA_CIPHER_KEY": key}
    second.api_key = first.api_key  # one ledger: the same users
    second.start()
    try:
        assert "encrypted with WAKA_CIPHER_KEY" in second.log()
        assert config_of(second, name)["SECRET"] == value
        assert not (second_home / "cipher.key").exists()
    finally:
        second.stop_cleanly()


def test_a_ledger_made_before_encryption_keeps_working_until_rotated(
    heroku_cli: Path, tmp_path: Path
) -> None:
    """A home whose ledger waka wrote in clear: `waka up` reads it as it is and says so; after
    `waka cipher-key rotate` (waka stopped) it is encrypted, and reads the same."""
    server = WakaServer(tmp_path / "waka-home", tmp_path / "cli-home", heroku_cli)
    settings = settings_of(server)
    server.home.mkdir()
    ledger = Ledger(env=settings.eventsourcing_env())  # no key: as waka wrote before
    try:
        account, server.api_key = ledger.register_user(OWNER_EMAIL)
        name, value = unique_name("legacy"), f"old-{uuid.uuid4().hex}"
        app = ledger.create_app(account.as_actor(), name)
        ledger.set_config(account.as_actor(), app.id, {"SECRET": value})
    finally:
        ledger.close()

    server.start()
    try:
        assert "stays UNENCRYPTED" in server.log()
        assert not (server.home / "cipher.key").exists()
        assert config_of(server, name)["SECRET"] == value
        assert in_clear(settings, value) == {value}  # the scan sees a secret in clear
    finally:
        server.stop_cleanly()

    rotated = server.waka("cipher-key", "rotate").stdout
    assert "Re-encrypted" in rotated and "back it up" in rotated
    assert mode(server.home / "cipher.key") == 0o600
    server.start()
    try:
        assert "encrypted with the key in" in server.log().rpartition("--- waka up")[2]
        assert config_of(server, name)["SECRET"] == value
        later = f"new-{uuid.uuid4().hex}"
        server.heroku("config:set", f"LATER={later}", "-a", name)
        assert in_clear(settings, value, later) == set()
    finally:
        server.stop_cleanly()
