"""Heroku Postgres add-ons: a role and a database of its own on the platform's PostgreSQL server.

The add-on's role `u<hex>` owns its database `d<hex>` (hex from the add-on id), logs in with a
random password and is limited to the plan's connections. CONNECT and TEMPORARY on the
database are revoked from PUBLIC, so only its role (and superusers) can connect: one add-on's
credentials are refused by every other add-on's database.

The password is sent to the server as a SCRAM-SHA-256 verifier, never in clear, so it appears
in no server log. It cannot be read back: a repeated `provision` sets a new one and returns it.
The plan's storage limit is not enforced (PostgreSQL has no per-database quota); `info` shows
the size against it, as Heroku does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from waka.addons.catalogue import HEROKU_POSTGRESQL, Plan
from waka.addons.provider import ProviderError


class PostgresProvider:
    service = HEROKU_POSTGRESQL

    def __init__(self, admin_url: str, public_host: str, connect_timeout: int = 10) -> None:
        """`admin_url` logs in as a superuser; dynos reach the server at `public_host` on the
        admin URL's port."""
        self.admin_url = admin_url
        self.public_host = public_host
        self.connect_timeout = connect_timeout
        params = conninfo_to_dict(admin_url)
        self.port = int(str(params.get("port") or 5432).split(",")[0])
        # For error messages: where the server is, without the admin's password.
        self._where = f"{params.get('host') or 'localhost'}:{self.port}"

    def provision(self, addon_id: str, plan: Plan) -> dict[str, str]:
        names = _Names.of(addon_id)
        connections = _limit(plan, "connections")
        password = secrets.token_hex(24)  # hex: nothing to escape in a URL
        role, database = sql.Identifier(names.role), sql.Identifier(names.database)
        with self._admin() as conn:
            _lock(conn, names)
            options = sql.SQL(
                "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                " CONNECTION LIMIT {} PASSWORD {}"
            ).format(sql.Literal(connections), sql.Literal(_scram_verifier(password)))
            if _role_exists(conn, names.role):
                conn.execute(sql.SQL("ALTER ROLE {} WITH ").format(role) + options)
            else:
                conn.execute(sql.SQL("CREATE ROLE {} WITH ").format(role) + options)
            if _database_exists(conn, names.database):
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, role))
            else:
                # template0: nobody connects to it, so parallel creations never find it busy.
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(database, role)
                )
            # PUBLIC may connect to (and make temporary tables in) every new database.
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return {"URL": f"postgres://{names.role}:{password}@{host}:{self.port}/{names.database}"}

    def deprovision(self, addon_id: str) -> None:
        names = _Names.of(addon_id)
        role, database = sql.Identifier(names.role), sql.Identifier(names.database)
        with self._admin() as conn:
            _lock(conn, names)
            role_exists = _role_exists(conn, names.role)
            if role_exists:  # no new sessions while the old ones are ended
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            self._end_sessions(conn, names)
            # WITH (FORCE) (PostgreSQL 13+) also ends a session that slipped in meanwhile.
            force = sql.SQL(" WITH (FORCE)" if conn.info.server_version >= 130000 else "")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(database) + force)
            if role_exists:
                # Grants to the role in this database would keep DROP ROLE from working.
                conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))

    def reset(self, addon_id: str) -> None:
        """`pg:reset`: an empty database again, the same name, role and password (so the URL
        the apps hold still works). Idempotent: a repeat makes it empty again."""
        names = _Names.of(addon_id)
        role, database = sql.Identifier(names.role), sql.Identifier(names.database)
        with self._admin() as conn:
            _lock(conn, names)
            if not _role_exists(conn, names.role):
                raise ProviderError(f"the role of add-on {addon_id} is gone", retryable=False)
            self._end_sessions(conn, names)
            force = sql.SQL(" WITH (FORCE)" if conn.info.server_version >= 130000 else "")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(database) + force)
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(database, role)
            )
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))

    def kill_connections(self, addon_id: str) -> int:
        """`pg:killall`: end every session on the add-on's database; returns how many."""
        with self._admin() as conn:
            return self._end_sessions(conn, _Names.of(addon_id))

    @staticmethod
    def _end_sessions(conn: psycopg.Connection, names: _Names) -> int:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE (datname = %s OR usename = %s) AND pid <> pg_backend_pid()",
            (names.database, names.role),
        ).fetchall()
        return sum(1 for (ended,) in rows if ended)

    def ensure_running(self, addon_id: str, plan: Plan, config: dict[str, str]) -> None:
        """The server is the operator's to keep running; the role keeps the plan's limit (a
        plan change lands here), with the password it has."""
        names = _Names.of(addon_id)
        connections = _limit(plan, "connections")
        with self._admin() as conn:
            row = conn.execute(
                "SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (names.role,)
            ).fetchone()
            if row is not None and row[0] != connections:
                conn.execute(
                    sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                        sql.Identifier(names.role), sql.Literal(connections)
                    )
                )

    def exists(self, addon_id: str) -> bool:
        names = _Names.of(addon_id)
        with self._admin() as conn:
            return _role_exists(conn, names.role) or _database_exists(conn, names.database)

    def info(self, addon_id: str, plan: Plan) -> list[tuple[str, str]]:
        """pg:info's facts, as far as the server knows them."""
        names = _Names.of(addon_id)
        facts = [("Plan", plan.human_name)]
        with self._admin() as conn:
            row = conn.execute(
                "SELECT pg_database_size(datname),"
                " (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname),"
                " current_setting('server_version')"
                " FROM pg_database d WHERE datname = %s",
                (names.database,),
            ).fetchone()
        if row is None:
            return [*facts, ("Status", "Unavailable")]
        size, connections, version = row
        with self._admin(dbname=names.database) as conn:  # a superuser may connect anyway
            tables_row = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p')"
                " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname NOT LIKE 'pg_toast%'"
            ).fetchone()
        tables = tables_row[0] if tables_row else 0
        storage = plan.limits.get("storage_mb")
        data_size = _pretty_bytes(size)
        if storage:
            limit_bytes = storage * 1024 * 1024
            data_size += f" / {_pretty_bytes(limit_bytes)} ({100 * size / limit_bytes:.2f}%)"
        return [
            *facts,
            ("Status", "Available"),
            ("Connections", f"{connections}/{plan.limits.get('connections', '?')}"),
            ("PG Version", str(version).split()[0]),
            ("Data Size", data_size),
            ("Tables", str(tables)),
        ]

    @contextmanager
    def _admin(self, dbname: str | None = None) -> Iterator[psycopg.Connection]:
        """A superuser session; the server's errors become ProviderErrors."""
        extra = {"dbname": dbname} if dbname else {}
        try:
            with psycopg.connect(
                self.admin_url, autocommit=True, connect_timeout=self.connect_timeout, **extra
            ) as conn:
                yield conn
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ProviderError(
                f"PostgreSQL at {self._where} refused: {exc} (the admin URL must log in as a "
                "superuser)",
                retryable=False,
            ) from exc
        except psycopg.OperationalError as exc:  # unreachable, login refused, server busy
            raise ProviderError(f"PostgreSQL at {self._where} is not available: {exc}") from exc
        except psycopg.Error as exc:
            raise ProviderError(f"PostgreSQL at {self._where} failed: {exc}") from exc


class _Names:
    """The role's and the database's names, and a lock key, derived from the add-on id."""

    def __init__(self, hexid: str) -> None:
        self.role = f"u{hexid}"
        self.database = f"d{hexid}"
        self.lock_key = int(hexid[:15], 16)  # fits a bigint

    @classmethod
    def of(cls, addon_id: str) -> _Names:
        try:
            hexid = uuid.UUID(addon_id).hex  # an operator can tell which add-on it is
        except ValueError:
            hexid = hashlib.sha256(addon_id.encode()).hexdigest()[:32]
        return cls(hexid)


def _lock(conn: psycopg.Connection, names: _Names) -> None:
    """One provision or deprovision of an add-on at a time; released when the session ends."""
    conn.execute("SELECT pg_advisory_lock(%s)", (names.lock_key,))


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _database_exists(conn: psycopg.Connection, database: str) -> bool:
    found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
    return found is not None


def _limit(plan: Plan, key: str) -> int:
    try:
        return int(plan.limits[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(f"plan {plan.name} has no {key} limit", retryable=False) from exc


def _scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802; libpq's format)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _pretty_bytes(size: float) -> str:
    """As pg_size_pretty and Heroku write sizes: 7.6 MB, 1 GB."""
    units = ("bytes", "kB", "MB", "GB", "TB")
    step = 0
    while size >= 1024 and step < len(units) - 1:
        size /= 1024
        step += 1
    if step == 0 or size == int(size):
        return f"{size:.0f} {units[step]}"
    return f"{size:.1f} {units[step]}"
