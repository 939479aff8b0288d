"""The cipher key: stored events and the read models' secrets are encrypted by default.

Where the key comes from, first match wins:

1. `WAKA_CIPHER_KEY`: the operator's own (one key for every host of a PostgreSQL ledger).
2. `$WAKA_HOME/cipher.key` (mode 0600): made by the first start of an installation, and read
   by every later process of the same home (`waka up`, the git hook, the CLI commands).
3. Neither, and a ledger that already holds events written in clear (made before encryption
   was the default): it keeps working unencrypted, as it was; `waka up` says so at start.

A ledger opened with the wrong key (or none, or a key for a ledger written in clear) is
refused at start with what to do, rather than failing later, deep inside a replay.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment

from waka.config import Settings

if TYPE_CHECKING:
    from waka.ledger import Ledger

log = logging.getLogger("waka.cipher")

KEY_FILE = "cipher.key"
KEY_SIZES = (16, 24, 32)  # AES-128/192/256, as eventsourcing's AESCipher takes them

LedgerState = Literal["empty", "clear", "encrypted"]


class CipherKeyError(Exception):
    """The key is unusable, missing, or does not open this ledger; the message says why."""


def key_file(settings: Settings) -> Path:
    return settings.home / KEY_FILE


def resolve(settings: Settings) -> Settings:
    """`settings` with the cipher key this installation uses (None: a ledger in clear)."""
    if settings.cipher_key:
        _check_key(settings.cipher_key, "WAKA_CIPHER_KEY")
        return settings
    path = key_file(settings)
    if path.exists():
        return replace(settings, cipher_key=read_key(path), cipher_key_file=path)
    state = ledger_state(settings)
    if state == "clear":
        log.warning(
            "this ledger was written before encryption was the default: it stays unencrypted "
            "(no %s in %s, no WAKA_CIPHER_KEY)",
            KEY_FILE,
            settings.home,
        )
        return settings
    if state == "encrypted":
        raise CipherKeyError(
            f"the ledger is encrypted and there is no key: set WAKA_CIPHER_KEY to the key the "
            f"other waka hosts of this database use (or copy their {KEY_FILE} to {path})"
        )
    return replace(settings, cipher_key=create_key(path), cipher_key_file=path)


def read_key(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except OSError as error:
        raise CipherKeyError(f"cannot read the cipher key {path}: {error.strerror}") from None
    _check_key(key, str(path))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # a copy restored with the wrong mode: waka's user alone reads it
    return key


def create_key(path: Path) -> str:
    """A new key in `path` (0600); if another process made one first, that one."""
    key = AESCipher.create_key(num_bytes=32)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(partial, path)  # whole or absent: a concurrent reader never sees half
        except FileExistsError:
            return read_key(path)
    finally:
        partial.unlink(missing_ok=True)
    log.info("made a new cipher key in %s: back it up (see the README)", path)
    return key


def ledger_state(settings: Settings) -> LedgerState:
    """Whether the ledger holds no events yet, events in clear, or encrypted events."""
    from waka.ledger import Ledger

    if not settings.uses_postgres and not (settings.home / "ledger.sqlite").exists():
        return "empty"
    ledger = Ledger(env=replace(settings, cipher_key=None).eventsourcing_env())
    try:
        state = _first_state(ledger)
    finally:
        ledger.close()
    if state is None:
        return "empty"
    return "clear" if _is_compressed(state) else "encrypted"


def check(ledger: Ledger, settings: Settings) -> None:
    """Refuse a key that does not open this ledger (a ledger without a key is `resolve`'s).
    The first and the latest event are tried: the latest catches a ledger that two hosts of one
    database began with keys of their own."""
    cipher = ledger.mapper.cipher
    first = _first_state(ledger)
    if cipher is None or first is None:
        return
    source = str(settings.cipher_key_file or "WAKA_CIPHER_KEY")
    if _is_compressed(first):
        raise CipherKeyError(
            f"this ledger was written unencrypted, but a cipher key is given ({source}): "
            "remove it to keep using the ledger as it is (`waka cipher-key rotate` without a "
            "key encrypts it)"
        )
    latest = ledger.recorder.select_notifications(
        start=ledger.recorder.max_notification_id() or 1, limit=1
    )
    for state in [first, *(n.state for n in latest)]:
        try:
            cipher.decrypt(state)
        except ValueError:
            raise CipherKeyError(
                f"the cipher key ({source}) does not open this ledger: it was written with "
                "another key (restore the right one from your backup; every host of one "
                "database needs the same WAKA_CIPHER_KEY)"
            ) from None


def _first_state(ledger: Ledger) -> bytes | None:
    notifications = ledger.recorder.select_notifications(start=1, limit=1)
    return notifications[0].state if notifications else None


def _is_compressed(state: bytes) -> bool:
    """Stored state in clear is zlib data; encrypted state (AES-GCM) is not."""
    with contextlib.suppress(zlib.error):
        zlib.decompress(state)
        return True
    return False


def _check_key(key: str, source: str) -> None:
    try:
        size = len(base64.b64decode(key, validate=True))
    except (binascii.Error, ValueError):
        size = 0
    if size not in KEY_SIZES:
        raise CipherKeyError(
            f"{source} is not a cipher key (base64 of 16, 24 or 32 bytes; "
            "`waka cipher-key` prints a new one)"
        )


def rotate(settings: Settings, new_key: str) -> int:
    """Re-encrypt every stored event and snapshot with `new_key`, all in one transaction, and
    make it the installation's key; returns how many were re-encrypted. `settings` is resolved
    (its key opens the ledger; None: a ledger in clear, which this encrypts). Every process of
    the installation must be stopped: one still running would hold the old key.

    The events are the same events, only written afresh under the new key. The new key is in
    `cipher.key.new` before the transaction commits, so a crash in between loses no key.
    """
    from waka.ledger import Ledger

    _check_key(new_key, "the new key")
    old = AESCipher(_environment(settings.cipher_key)) if settings.cipher_key else None
    new = AESCipher(_environment(new_key))
    ledger = Ledger(env=settings.eventsourcing_env())
    try:
        check(ledger, settings)
        assert ledger.snapshots is not None
        tables = [ledger.recorder.events_table_name, ledger.snapshots.recorder.events_table_name]
    finally:
        ledger.close()

    def reencrypt(state: bytes) -> bytes:
        plain = old.decrypt(state) if old else state
        zlib.decompress(plain)  # the old key opened it (a wrong one would fail above)
        return new.encrypt(plain)

    staged = None
    if settings.cipher_key_file or not settings.cipher_key:
        staged = key_file(settings).with_name(KEY_FILE + ".new")
        staged.unlink(missing_ok=True)
        create_key_file(staged, new_key)
    if settings.database_url:
        count = _rotate_postgres(settings, tables, reencrypt)
    else:
        count = _rotate_sqlite(settings.home / "ledger.sqlite", tables, reencrypt)
    if staged:
        os.replace(staged, key_file(settings))
    return count


def create_key_file(path: Path, key: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
        out.flush()
        os.fsync(out.fileno())


def _rotate_sqlite(path: Path, tables: list[str], reencrypt: Callable[[bytes], bytes]) -> int:
    import sqlite3

    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")  # no other writer meanwhile
        count = 0
        for table in tables:
            select = f"SELECT originator_id, originator_version, state FROM {table}"
            update = (
                f"UPDATE {table} SET state = ? WHERE originator_id = ? AND originator_version = ?"
            )
            for originator_id, version, state in conn.execute(select).fetchall():
                conn.execute(update, (reencrypt(state), originator_id, version))
                count += 1
        conn.execute("COMMIT")
        return count
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def _rotate_postgres(
    settings: Settings, tables: list[str], reencrypt: Callable[[bytes], bytes]
) -> int:
    import psycopg
    from psycopg import sql

    assert settings.database_url
    count = 0
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        for table in tables:
            name = sql.Identifier(settings.database_schema, table)
            conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(name))
            rows = conn.execute(
                sql.SQL("SELECT originator_id, originator_version, state FROM {}").format(name)
            ).fetchall()
            update = sql.SQL(
                "UPDATE {} SET state = %s WHERE originator_id = %s AND originator_version = %s"
            ).format(name)
            for originator_id, version, state in rows:
                conn.execute(update, (reencrypt(bytes(state)), originator_id, version))
                count += 1
    return count


def _environment(key: str | None) -> Environment:
    return Environment("waka", {"CIPHER_KEY": key or ""})
