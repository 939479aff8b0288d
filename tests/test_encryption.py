"""Encryption of stored events: with a cipher key, config values never reach the store in clear.

eventsourcing's Mapper compresses (zlib) and then encrypts (AES-GCM) each event's state, so
the checks below decompress what they read: a merely compressed secret is still a secret in
clear, and `b"s3cret-value" in raw_bytes` alone would miss it.
"""

import dataclasses
import zlib

import pytest
from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment

from waka.domain.names import AppName
from waka.ledger import SNAPSHOT_INTERVAL, Ledger
from waka.projections.config_vars import config_of

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


def make_history(platform, actor):
    """An app whose config holds SECRET from v2 on, with enough changes for a snapshot."""
    app = platform.ledger.create_app(actor, "secret-app")
    platform.ledger.set_config(actor, app.id, {"API_TOKEN": SECRET})
    for i in range(SNAPSHOT_INTERVAL // 2):
        platform.ledger.set_config(actor, app.id, {"COUNTER": str(i)})
    return app


def test_encrypted_store_holds_no_config_value_in_clear(settings, make_platform, cipher_key):
    platform = make_platform(dataclasses.replace(settings, cipher_key=cipher_key))
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = make_history(platform, actor)

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


def test_without_a_key_the_value_is_stored_readably(settings, make_platform):
    # Proves the checks above would catch a store that does not encrypt.
    assert settings.cipher_key is None
    platform = make_platform(settings)
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = make_history(platform, actor)

    states = stored_event_states(platform) + stored_snapshot_states(platform, app.id)
    assert all(decompresses(s) for s in states)
    assert any(SECRET.encode() in zlib.decompress(s) for s in states)
    assert platform.ledger.get_app(app.id).config["API_TOKEN"] == SECRET


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


def test_without_a_key_the_read_models_hold_values_readably(settings, make_platform):
    platform = make_platform(settings)
    actor = platform.ledger.register_user("owner@example.com")[0].as_actor()
    app = platform.ledger.create_app(actor, "secret-app")
    platform.ledger.set_config(actor, app.id, {"API_TOKEN": SECRET})
    platform.projector.catch_up()
    rows = platform.store.query("SELECT value, sealed FROM waka_config_vars")
    assert rows == [{"value": SECRET, "sealed": 0}]
