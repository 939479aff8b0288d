"""The write path's speed-ups keep it correct: the ledger's cipher reads and writes the library's
format, the aggregate cache never serves stale or shared state (also across processes), and
the projector's pipelined catch-up neither skips nor repeats events."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment

from waka.ledger import Ledger
from waka.ledger_cipher import OpenSSLAESCipher
from waka.ledger_repository import CachingRepository
from waka.projections.config_vars import config_of
from waka.projections.releases import releases_of
from waka.projections.sealing import Sealer


def ciphers() -> tuple[AESCipher, OpenSSLAESCipher]:
    env = Environment("waka", {"CIPHER_KEY": AESCipher.create_key(num_bytes=32)})
    return AESCipher(env), OpenSSLAESCipher(env)


def test_openssl_cipher_reads_and_writes_the_library_format() -> None:
    library, ours = ciphers()
    plain = b'{"config": {"DATABASE_URL": "postgres://u:p@h/db"}}' * 20
    assert library.decrypt(ours.encrypt(plain)) == plain
    assert ours.decrypt(library.encrypt(plain)) == plain
    assert ours.encrypt(plain) != ours.encrypt(plain)  # a fresh nonce each time


@pytest.mark.parametrize("damage", ["flip", "truncate", "short"])
def test_openssl_cipher_refuses_damaged_text(damage: str) -> None:
    _, ours = ciphers()
    sealed = ours.encrypt(b"secret")
    damaged = {
        "flip": sealed[:-1] + bytes([sealed[-1] ^ 1]),
        "truncate": sealed[:-1],
        "short": sealed[:20],
    }[damage]
    with pytest.raises(ValueError, match=r"[dD]amaged"):
        ours.decrypt(damaged)


def test_sealing_gives_the_bytes_pycryptodome_gave() -> None:
    """Read models sealed before the switch are rebuilt to the very same rows."""
    key = AESCipher.create_key(num_bytes=32)
    value = "postgres://user:secret@db.example.com/app"
    sealed = Sealer(key).seal(value)
    raw = base64.b64decode(sealed)
    library = AESCipher(Environment("waka", {"CIPHER_KEY": key}))
    encrypted, tag = library.construct_cipher(raw[:12]).encrypt_and_digest(value.encode())
    assert raw == raw[:12] + tag + encrypted
    assert Sealer(key).open(sealed) == value


def test_the_ledger_encrypts_with_the_openssl_cipher(platform, backend) -> None:
    assert isinstance(platform.ledger.mapper.cipher, OpenSSLAESCipher)
    assert isinstance(platform.ledger.repository, CachingRepository)
    # On PostgreSQL the projector reads the notifications on its own connection.
    assert (platform.projector._notifications_sql is not None) == (backend == "postgres")


def test_a_loaded_aggregate_is_the_callers_own(platform, actor) -> None:
    ledger = platform.ledger
    app = ledger.create_app(actor, "mine")
    first = ledger.get_app(app.id)
    first.set_config({"UNSAVED": "1"}, actor)  # changed, never saved
    again = ledger.get_app(app.id)
    assert "UNSAVED" not in again.config
    assert again is not first and again.version == app.version


def test_another_process_write_is_seen_and_kept(make_platform, actor) -> None:
    """Two processes on one store, each with its cache: neither works on stale state."""
    one = make_platform()
    two = make_platform()  # another API copy
    app = one.ledger.create_app(actor, "shared")
    one.ledger.set_config(actor, app.id, {"A": "1"})
    assert one.ledger.get_app(app.id).config == {"A": "1"}  # cached in one

    two.ledger.set_config(actor, app.id, {"B": "2"})  # written by the other
    assert one.ledger.get_app(app.id).config == {"A": "1", "B": "2"}
    one.ledger.set_config(actor, app.id, {"C": "3"})  # on top of it, not over it
    assert two.ledger.get_app(app.id).config == {"A": "1", "B": "2", "C": "3"}

    # Each process reads its own writes and the other's through its read models.
    one.projector.catch_up()
    two.projector.catch_up()
    for platform in (one, two):
        assert config_of(platform.store, str(app.id)) == {"A": "1", "B": "2", "C": "3"}
        assert [r["version"] for r in releases_of(platform.store, str(app.id))] == [1, 2, 3, 4]


def test_two_processes_writing_one_app_lose_nothing(make_platform, actor) -> None:
    one, two = make_platform(), make_platform()
    app = one.ledger.create_app(actor, "contended")
    writes = 12
    errors: list[BaseException] = []

    def writer(ledger: Ledger, tag: str) -> None:
        try:
            for i in range(writes):
                ledger.set_config(actor, app.id, {f"{tag}{i}": str(i)})
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=writer, args=(platform.ledger, tag))
        for platform, tag in ((one, "X"), (one, "Y"), (two, "Z"), (two, "W"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = {f"{tag}{i}": str(i) for tag in "XYZW" for i in range(writes)}
    for platform in (one, two):
        loaded = platform.ledger.get_app(app.id)
        assert loaded.config == expected
        assert loaded.current_release == 1 + 4 * writes
        platform.projector.catch_up()
        assert config_of(platform.store, str(app.id)) == expected
        versions = [r["version"] for r in releases_of(platform.store, str(app.id))]
        assert versions == list(range(1, 2 + 4 * writes))


def test_cache_off_loads_from_the_store_every_time(platform, actor) -> None:
    env = {**platform.settings.eventsourcing_env(), "AGGREGATE_CACHE_MAXSIZE": "0"}
    plain = Ledger(env=env)
    try:
        app = platform.ledger.create_app(actor, "uncached")
        platform.ledger.set_config(actor, app.id, {"K": "v"})
        assert plain.get_app(app.id).config == {"K": "v"}
        assert plain.repository._cached == {}  # nothing kept
    finally:
        plain.close()


def test_the_cache_is_bounded(platform, actor) -> None:
    ledger = platform.ledger
    repository = ledger.repository
    repository.maxsize = 3
    apps = [ledger.create_app(actor, f"app-{n}") for n in range(5)]
    for app in apps:
        ledger.get_app(app.id)
    assert list(repository._cached) == [a.id for a in apps[-3:]]


def test_catch_up_applies_only_what_is_new_and_writes_every_position(platform, actor) -> None:
    projector = platform.projector
    app = platform.ledger.create_app(actor, "positions")
    assert projector.catch_up() > 0
    assert projector.catch_up() == 0  # nothing new: nothing read
    platform.ledger.set_config(actor, app.id, {"K": "v"})
    assert projector.catch_up() == 2  # ConfigChanged, Released
    latest = platform.ledger.recorder.max_notification_id()
    positions = platform.store.query("SELECT name, position FROM waka_positions")
    assert {r["name"] for r in positions} == {p.name for p in projector.projections}
    assert {r["position"] for r in positions} == {latest}


def test_rebuild_after_pipelined_catch_ups_gives_the_same_tables(platform, actor) -> None:
    ledger = platform.ledger
    app = ledger.create_app(actor, "rebuilt")
    for i in range(30):
        ledger.set_config(actor, app.id, {f"K{i % 7}": str(i), "SECRET_URL": f"x://u:p@h/{i}"})
        platform.projector.catch_up()
    ledger.add_domain(actor, app.id, "www.example.com")
    platform.projector.catch_up()
    live = platform.projector.dump()
    platform.projector.rebuild()
    assert platform.projector.dump() == live


def test_commands_on_one_app_queue_in_a_process(platform, actor, monkeypatch) -> None:
    """Eight writers of one app in one process: no save lost to a conflict, none lost."""
    ledger = platform.ledger
    app = ledger.create_app(actor, "queued")
    saves = []
    save = ledger.save
    monkeypatch.setattr(ledger, "save", lambda *a, **k: saves.append(1) or save(*a, **k))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        barrier.wait(timeout=30)
        try:
            for i in range(5):
                ledger.set_config(actor, app.id, {f"T{n}_{i}": "x"})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(saves) == 40  # one save per write: none retried
    assert len(ledger.get_app(app.id).config) == 40


def test_catch_up_notices_positions_moved_back_by_another_process(make_platform, actor) -> None:
    """Read models rebuilt (or a PostgreSQL crash taking back catch-ups) under a process that
    thought it was up to date: its next catch-up brings them back, though it wrote nothing."""
    one = make_platform()
    app = one.ledger.create_app(actor, "moved-back")
    one.ledger.set_config(actor, app.id, {"K": "v"})
    one.projector.catch_up()
    assert one.projector.catch_up() == 0

    other = make_platform()
    with other.store.transaction() as cur:  # forgotten, as `rebuild` does before replaying
        for projection in other.projector.projections:
            cur.execute("DELETE FROM waka_positions WHERE name = ?", (projection.name,))
    other.projector.setup()  # the tables made anew, empty
    assert config_of(one.store, str(app.id)) == {}

    assert one.projector.catch_up() > 0
    assert config_of(one.store, str(app.id)) == {"K": "v"}


def test_read_models_survive_their_pooled_connections_dying(platform, actor, backend) -> None:
    """PostgreSQL restarted while the API was idle: the read store's pooled connections are
    dead. The next query and the next catch-up use new ones instead of failing."""
    if backend != "postgres":
        pytest.skip("SQLite has no server connections to lose")
    import psycopg

    app = platform.ledger.create_app(actor, "survivor")
    platform.projector.catch_up()
    store = platform.store
    pids = {store.query("SELECT pg_backend_pid() AS pid")[0]["pid"] for _ in range(3)}
    with psycopg.connect(platform.settings.database_url, autocommit=True) as admin:
        for pid in pids:  # what a restart does to every idle connection
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)
    assert store.query("SELECT name FROM waka_apps") == [{"name": "survivor"}]

    pids = {store.query("SELECT pg_backend_pid() AS pid")[0]["pid"] for _ in range(3)}
    with psycopg.connect(platform.settings.database_url, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)
    platform.ledger.set_config(actor, app.id, {"K": "v"})
    platform.projector.catch_up()
    assert config_of(store, str(app.id)) == {"K": "v"}
