"""Secrets at rest, with no WAKA_CIPHER_KEY given: the raw store files (SQLite) or tables
(PostgreSQL) hold no config value, add-on credential, token or certificate key in clear, and
the home is waka's user's alone.

The stores are read as an attacker with a copy of them would: every file in the home byte by
byte, and every value of every table through the database itself (a zlib-compressed event is
decompressed first: compressed is still in clear). The same scan of a ledger made before
encryption was the default finds the secrets, so it can see them.
"""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.raw_stores import in_clear
from waka.adapters.cipher_key import KEY_FILE
from waka.ledger import SNAPSHOT_INTERVAL, Ledger
from waka.projections.apps import find_app
from waka.projections.config_vars import config_of
from waka.projections.drains import drains_of, find_drain

SECRET = "s3cret-config-value"
REDIS_PASSWORD = "redis-pa55word-in-the-url"
DRAIN_PASSWORD = "drain-pa55word"
DRAIN_URL = f"https://logs:{DRAIN_PASSWORD}@logs.example.com/ingest"


def secret_history(ledger: Ledger) -> dict[str, str]:
    """Config values, add-on credentials and tokens, with a snapshot; returns the secrets."""
    account, api_key = ledger.register_user("owner@example.com")
    actor = account.as_actor()
    _, token = ledger.create_authorization(actor, "CI", ["global"], None, "api")
    app = ledger.create_app(actor, "secret-app")
    ledger.set_config(actor, app.id, {"API_TOKEN": SECRET})
    addon = ledger.create_addon(actor, app.id, "heroku-redis")
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379"
    ledger.complete_provisioning(addon.id, {"URL": url}, actor)
    ledger.add_drain(actor, app.id, DRAIN_URL)
    for i in range(SNAPSHOT_INTERVAL):
        ledger.set_config(actor, app.id, {"COUNTER": str(i)})
    return {
        "config": SECRET,
        "addon": REDIS_PASSWORD,
        "drain": DRAIN_PASSWORD,
        "api_key": api_key,
        "token": token,
    }


def test_the_stores_hold_no_secret_in_clear_by_default(settings, make_platform):
    assert settings.cipher_key is None  # nothing given: encryption is the default
    platform = make_platform(settings)
    secrets = secret_history(platform.ledger)
    platform.projector.catch_up()
    app_id = find_app(platform.store, "secret-app")["id"]
    assert config_of(platform.store, app_id)["API_TOKEN"] == SECRET  # it is all there
    [drain] = drains_of(platform.store, app_id)  # the forwarder and the API read it opened
    assert drain["url"] == DRAIN_URL
    assert find_drain(platform.store, app_id, DRAIN_URL) == drain

    assert in_clear(settings, *secrets.values()) == set()


def test_the_scan_sees_secrets_in_a_ledger_made_before_encryption(settings, make_platform):
    """A ledger written in clear (by waka before this default) keeps working as it was."""
    settings.home.mkdir(parents=True)
    ledger = Ledger(env=settings.eventsourcing_env())
    try:
        secrets = secret_history(ledger)
    finally:
        ledger.close()

    platform = make_platform(settings)
    assert platform.settings.cipher_key is None
    assert not (settings.home / KEY_FILE).exists()
    platform.projector.catch_up()
    app_id = find_app(platform.store, "secret-app")["id"]
    assert config_of(platform.store, app_id)["API_TOKEN"] == SECRET
    assert {SECRET, REDIS_PASSWORD, DRAIN_PASSWORD} <= in_clear(settings, *secrets.values())
    assert drains_of(platform.store, app_id)[0]["url"] == DRAIN_URL


def _certificate(domain: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def test_certificate_keys_are_not_in_clear(settings, make_platform):
    sni = pytest.importorskip("waka.sni_endpoints")
    platform = make_platform(settings)
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = platform.ledger.create_app(actor, "cert-app")
    chain, key = _certificate("www.example.com")
    sni.add_endpoint(platform.ledger, actor, app.id, chain, key)
    platform.projector.catch_up()
    body = "".join(key.strip().splitlines()[1:-1])  # the base64 of the key, without armour
    assert body[:40] and in_clear(settings, key, body[:40]) == set()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_home_and_its_stores_are_waka_users_alone(settings, make_platform):
    make_platform(settings)
    home = settings.home
    assert mode(home) == 0o700
    assert mode(home / KEY_FILE) == 0o600
    if not settings.database_url:
        for name in ("ledger.sqlite", "projections.sqlite"):
            assert mode(home / name) == 0o600


def test_a_home_made_by_an_older_waka_is_made_private_at_start(settings, make_platform):
    make_platform(settings)
    home = settings.home
    opened = [home, home / "repos", home / "sources", home / "builds", home / "tls"]
    for directory in opened:
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)
    files = [home / KEY_FILE, home / "tls" / "server-key.pem"]
    if not settings.database_url:
        files.append(home / "ledger.sqlite")
    for path in files:
        path.touch()
        path.chmod(0o644)
    (home / "repos" / "hooks").mkdir()
    (home / "repos" / "hooks").chmod(0o755)  # below the private dirs: left as it is

    make_platform(settings)  # the next start (or CLI command, or git hook) fixes them
    assert {p.name: mode(p) for p in opened} == {p.name: 0o700 for p in opened}
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert mode(home / "repos" / "hooks") == 0o755


def test_the_slug_and_dyno_directories_are_left_to_their_adapters(settings, make_platform):
    make_platform(settings)
    for name in ("slugs", "dynos", "work"):
        (settings.home / name).mkdir()
        (settings.home / name).chmod(0o755)
    make_platform(settings)
    assert all(mode(settings.home / n) == 0o755 for n in ("slugs", "dynos", "work"))
