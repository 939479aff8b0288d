"""Encryption of stored events, on by default: config values never reach the store in clear.

With no WAKA_CIPHER_KEY the first start makes a key file in the home, which every later
process finds; a ledger written in clear before that default keeps working as it was; a
ledger with the wrong key, or none, is refused at start with a clear message.

eventsourcing's Mapper compresses (zlib) and then encrypts (AES-GCM) each event's state, so
the checks below decompress what they read: a merely compressed secret is still a secret in
clear, and `b"s3cret-value" in raw_bytes` alone would miss it.
"""

import base64
import dataclasses
import os
import stat
import zlib

import pytest
from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment

from waka import cli
from waka.adapters.cipher_key import KEY_FILE, CipherKeyError
from waka.bootstrap import bootstrap
from waka.domain.names import AppName
from waka.ledger import SNAPSHOT_INTERVAL, Ledger
from waka.projections.config_vars import config_of
from waka.projections.sealing import Sealer

SECRET = "s3cret-value"


@pytest.fixture
def cipher_key():
    return AESCipher.create_key(num_bytes=32)


def stored_event_states(platform):
    notifications = platform.ledger.recorder.select_notifications(start=1, limit=1000)
    assert 0 < len(notifications) < 1000
    return [n.state for n in notifications]


def stored_snapshot_states(platform, app_id):
    return [s.state for s in platform.ledger.snapshots.recorder.select_events(app_id)]


def decompresses(state):
    try:
        zlib.decompress(state)
    except zlib.error:
        return False
    return True


def make_history(ledger, actor):
    """An app whose config holds SECRET from v2 on, with enough changes for a snapshot."""
    app = ledger.create_app(actor, "secret-app")
    ledger.set_config(actor, app.id, {"API_TOKEN": SECRET})
    for i in range(SNAPSHOT_INTERVAL // 2):
        ledger.set_config(actor, app.id, {"COUNTER": str(i)})
    return app


def test_encrypted_store_holds_no_config_value_in_clear(settings, make_platform, cipher_key):
    platform = make_platform(dataclasses.replace(settings, cipher_key=cipher_key))
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = make_history(platform.ledger, actor)

    events = stored_event_states(platform)
    snapshots = stored_snapshot_states(platform, app.id)
    assert snapshots, "expected a snapshot after SNAPSHOT_INTERVAL events"
    for state in events + snapshots:
        assert SECRET.encode() not in state
        assert b"API_TOKEN" not in state
        assert not decompresses(state), "stored state is only compressed, not encrypted"

    # The check can see a secret: decrypting with the key and decompressing reveals it.
    cipher = AESCipher(Environment(env={"CIPHER_KEY": cipher_key}))
    plain = [zlib.decompress(cipher.decrypt(s)) for s in events + snapshots]
    assert any(SECRET.encode() in p for p in plain)
    assert all(SECRET.encode() in p for p in plain[-1:])  # the snapshot holds the config

    # It all reads back with the key.
    assert platform.ledger.get_app(app.id).config["API_TOKEN"] == SECRET
    assert platform.ledger.config_at_release(app.id, 2) == {"API_TOKEN": SECRET}
    platform.projector.catch_up()
    assert config_of(platform.store, str(app.id))["API_TOKEN"] == SECRET


def test_encrypted_store_cannot_be_read_with_another_key(settings, make_platform, cipher_key):
    platform = make_platform(dataclasses.replace(settings, cipher_key=cipher_key))
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = platform.ledger.create_app(actor, "secret-app")
    platform.ledger.set_config(actor, app.id, {"API_TOKEN": SECRET})

    other = dataclasses.replace(settings, cipher_key=AESCipher.create_key(num_bytes=32))
    ledger = Ledger(env=other.eventsourcing_env())
    try:
        with pytest.raises(ValueError, match="damaged"):
            ledger.repository.get(AppName.id_for("secret-app"))
    finally:
        ledger.close()


def legacy_history(settings):
    """A ledger in clear, as waka wrote it before encryption was the default."""
    settings.home.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(env=settings.eventsourcing_env())
    try:
        actor = ledger.register_user("owner@example.com")[0].as_actor()
        return make_history(ledger, actor).id
    finally:
        ledger.close()


def test_a_ledger_made_before_encryption_keeps_working_in_clear(settings, make_platform):
    # Proves the checks above would catch a store that does not encrypt.
    app_id = legacy_history(settings)
    platform = make_platform(settings)
    assert platform.settings.cipher_key is None
    assert not (settings.home / KEY_FILE).exists()

    states = stored_event_states(platform) + stored_snapshot_states(platform, app_id)
    assert all(decompresses(s) for s in states)
    assert any(SECRET.encode() in zlib.decompress(s) for s in states)
    assert platform.ledger.get_app(app_id).config["API_TOKEN"] == SECRET
    platform.ledger.register_user("new@example.com")  # new events stay in clear too
    assert decompresses(stored_event_states(platform)[-1])
    platform.projector.catch_up()
    rows = platform.store.query("SELECT key, value, sealed FROM waka_config_vars")
    assert {"key": "API_TOKEN", "value": SECRET, "sealed": 0} in rows


def test_the_first_start_makes_a_key_that_every_process_finds(settings, make_platform):
    assert settings.cipher_key is None
    platform = make_platform(settings)
    path = settings.home / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert platform.settings.cipher_key == key
    assert platform.settings.cipher_key_file == path
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = make_history(platform.ledger, actor)
    assert not any(decompresses(s) for s in stored_event_states(platform))

    other = make_platform(settings)  # another process of the same home: the same key
    assert other.settings.cipher_key == key
    assert other.ledger.get_app(app.id).config["API_TOKEN"] == SECRET
    assert path.read_text().strip() == key


def test_a_given_key_wins_and_no_key_file_is_made(settings, make_platform, cipher_key):
    platform = make_platform(dataclasses.replace(settings, cipher_key=cipher_key))
    assert platform.settings.cipher_key == cipher_key
    assert platform.settings.cipher_key_file is None
    assert not (settings.home / KEY_FILE).exists()


def test_an_encrypted_ledger_without_its_key_is_refused_clearly(settings, make_platform):
    """A second host of one PostgreSQL ledger without the first one's key, or a lost key."""
    platform = make_platform(settings)
    platform.ledger.register_user("owner@example.com")
    (settings.home / KEY_FILE).unlink()
    with pytest.raises(CipherKeyError, match=r"encrypted and there is no key.*WAKA_CIPHER_KEY"):
        bootstrap(settings)
    assert not (settings.home / KEY_FILE).exists()  # no new key that could never open it


def test_a_wrong_key_is_refused_clearly(settings, make_platform, cipher_key):
    platform = make_platform(settings)
    platform.ledger.register_user("owner@example.com")
    with pytest.raises(CipherKeyError, match=r"WAKA_CIPHER_KEY.*does not open this ledger"):
        bootstrap(dataclasses.replace(settings, cipher_key=cipher_key))


def test_a_ledger_two_hosts_began_with_keys_of_their_own_is_refused(settings, make_platform):
    """Two hosts of one fresh database, started at once without WAKA_CIPHER_KEY: each made a
    key. The next start sees that the latest event is not under its key."""
    platform = make_platform(settings)
    platform.ledger.register_user("first@example.com")
    other = dataclasses.replace(settings, cipher_key=AESCipher.create_key(num_bytes=32))
    ledger = Ledger(env=other.eventsourcing_env())  # the other host, before any check
    try:
        ledger.register_user("second@example.com")
    finally:
        ledger.close()
    with pytest.raises(CipherKeyError, match="does not open this ledger"):
        bootstrap(settings)


def test_a_key_for_a_ledger_in_clear_is_refused_clearly(settings, cipher_key):
    legacy_history(settings)
    with pytest.raises(CipherKeyError, match="written unencrypted"):
        bootstrap(dataclasses.replace(settings, cipher_key=cipher_key))


@pytest.mark.parametrize("key", ["not base64!", "c2hvcnQ="])
def test_a_malformed_key_is_refused_clearly(settings, key):
    with pytest.raises(CipherKeyError, match="is not a cipher key"):
        bootstrap(dataclasses.replace(settings, cipher_key=key))


def test_settings_not_the_process_environment_decide_the_cipher(settings, monkeypatch):
    monkeypatch.setenv("WAKA_CIPHER_KEY", AESCipher.create_key(num_bytes=32))
    assert settings.cipher_key is None
    settings.home.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(env=settings.eventsourcing_env())
    try:
        assert ledger.mapper.cipher is None
    finally:
        ledger.close()


def test_the_read_models_seal_config_values_with_the_key(settings, make_platform, cipher_key):
    """Config values (add-on credentials among them) are sealed in the read models too."""
    sealed_settings = dataclasses.replace(settings, cipher_key=cipher_key)
    platform = make_platform(sealed_settings)
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = platform.ledger.create_app(actor, "secret-app")
    platform.ledger.set_config(actor, app.id, {"API_TOKEN": SECRET})
    addon = platform.ledger.create_addon(actor, app.id, "heroku-redis")
    url = f"redis://:{SECRET}-pw@127.0.0.1:6379"
    platform.ledger.complete_provisioning(addon.id, {"URL": url}, actor)
    platform.projector.catch_up()

    rows = platform.store.query("SELECT key, value, sealed FROM waka_config_vars")
    assert {r["key"] for r in rows} == {"API_TOKEN", "REDIS_URL"}
    assert all(r["sealed"] == 1 and SECRET not in r["value"] for r in rows)
    assert config_of(platform.store, str(app.id)) == {"API_TOKEN": SECRET, "REDIS_URL": url}

    platform.projector.rebuild()  # sealed afresh from the ledger: still readable
    assert config_of(platform.store, str(app.id))["REDIS_URL"] == url
    reopened = make_platform(sealed_settings)  # another process with the same key
    assert config_of(reopened.store, str(app.id))["API_TOKEN"] == SECRET


def test_sealing_is_stable_per_value_so_a_rebuild_gives_the_same_rows(cipher_key):
    sealer = Sealer(cipher_key)
    sealed = sealer.seal(SECRET)
    assert sealer.seal(SECRET) == sealed != sealer.seal(SECRET + "!")
    assert SECRET not in sealed and SECRET not in base64.b64decode(sealed).decode("latin-1")
    assert sealer.open(sealed) == SECRET
    assert Sealer(AESCipher.create_key(num_bytes=32)).seal(SECRET) != sealed
    with pytest.raises(ValueError, match="damaged"):
        Sealer(AESCipher.create_key(num_bytes=32)).open(sealed)


def run_cli(settings, monkeypatch, capsys, *argv):
    """`waka ARGV` in this process, on `settings`' stores; (exit code, stdout)."""
    monkeypatch.setenv("WAKA_HOME", str(settings.home))
    if settings.database_url:
        monkeypatch.setenv("WAKA_DATABASE_URL", settings.database_url)
        monkeypatch.setenv("WAKA_DATABASE_SCHEMA", settings.database_schema)
    if settings.cipher_key:
        monkeypatch.setenv("WAKA_CIPHER_KEY", settings.cipher_key)
    umask = os.umask(0o022)
    try:
        code = cli.main(list(argv))
    finally:
        os.umask(umask)
    return code, capsys.readouterr().out


def reads_back(settings, app_id):
    platform = bootstrap(settings)
    try:
        assert platform.ledger.get_app(app_id).config["API_TOKEN"] == SECRET
        assert config_of(platform.store, str(app_id))["API_TOKEN"] == SECRET
        rows = platform.store.query("SELECT value, sealed FROM waka_config_vars")
        assert rows and all(r["sealed"] == 1 and SECRET not in r["value"] for r in rows)
        return [
            zlib.decompress(platform.ledger.mapper.cipher.decrypt(s))
            for s in stored_event_states(platform)
        ]
    finally:
        platform.close()


def test_rotating_the_key_in_the_home(settings, monkeypatch, capsys):
    platform = bootstrap(settings)
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = make_history(platform.ledger, actor)
    platform.close()
    path = settings.home / KEY_FILE
    old_key = path.read_text().strip()

    code, out = run_cli(settings, monkeypatch, capsys, "cipher-key", "rotate")
    assert code == 0 and f"The new key is in {path}" in out
    new_key = path.read_text().strip()
    assert new_key != old_key and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in settings.home.glob("cipher.key*")) == [KEY_FILE]

    assert any(SECRET.encode() in p for p in reads_back(settings, app.id))
    with pytest.raises(CipherKeyError, match="does not open this ledger"):
        bootstrap(dataclasses.replace(settings, cipher_key=old_key))


def test_rotating_encrypts_a_ledger_made_before_encryption(settings, monkeypatch, capsys):
    app_id = legacy_history(settings)
    code, _ = run_cli(settings, monkeypatch, capsys, "cipher-key", "rotate")
    assert code == 0 and (settings.home / KEY_FILE).exists()
    plain = reads_back(settings, app_id)
    assert any(SECRET.encode() in p for p in plain)
    platform = bootstrap(settings)
    try:
        assert not any(decompresses(s) for s in stored_event_states(platform))
    finally:
        platform.close()


def test_rotating_a_key_given_in_the_environment(settings, monkeypatch, capsys, cipher_key):
    given = dataclasses.replace(settings, cipher_key=cipher_key)
    platform = bootstrap(given)
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = make_history(platform.ledger, actor)
    platform.close()

    code, out = run_cli(given, monkeypatch, capsys, "cipher-key", "rotate")
    assert code == 0 and "Set WAKA_CIPHER_KEY to this new key" in out
    new_key = out.strip().splitlines()[-1]
    assert new_key != cipher_key and not (settings.home / KEY_FILE).exists()
    reads_back(dataclasses.replace(settings, cipher_key=new_key), app.id)
    with pytest.raises(CipherKeyError, match="does not open this ledger"):
        bootstrap(given)
