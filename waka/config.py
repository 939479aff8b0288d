"""Settings, read once from the environment by the composition root."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None = None  # PostgreSQL; None means the embedded SQLite files
    database_schema: str = "public"
    # The base64 AES key that encrypts stored events and seals the read models' secrets: from
    # WAKA_CIPHER_KEY, else (see waka.adapters.cipher_key) the key file in the home.
    cipher_key: str | None = None
    cipher_key_file: Path | None = None  # where cipher_key was read from (None: the env)
    api_port: int = 5000
    # The Platform API and git over HTTPS (0: off). Its certificate is the operator's when
    # both files are given, else one from waka's own CA naming the hosts waka answers as.
    api_tls_port: int = 5443
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    router_port: int = 8080
    # The router's HTTPS port (0: off); app host names get the operator's wildcard certificate
    # when both files are given, else one from waka's CA per name.
    router_tls_port: int = 8443
    router_tls_cert: Path | None = None
    router_tls_key: Path | None = None
    # ACM (`heroku certs:auto:enable`): the ACME server's directory, the CA file to trust it
    # with (None: the system's), and the contact address given to it (optional).
    acme_directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_ca_file: Path | None = None
    acme_email: str | None = None
    public_host: str = "localhost"
    build_memory_mb: int = 2048
    sleep_after: float = 1800.0  # seconds without a request before eco dynos sleep
    runtime: str = "auto"  # auto (Docker when there), docker, swarm, or process (no isolation)
    # WAKA_RUNTIME=swarm: the Docker engine of a Swarm manager (default: this host's), and the
    # registry (host:port) every node pulls dyno images from.
    swarm_manager: str | None = None
    swarm_registry: str | None = None
    # Where attached one-offs on the Swarm connect back to the API process (0: any free port;
    # set one where a firewall stands between the nodes and the API's host).
    run_callback_port: int = 0
    # Add-ons: the PostgreSQL server whose superuser makes Heroku Postgres databases (default:
    # the ledger's own server, when that is PostgreSQL), and the address dynos reach add-on
    # servers at (default: the Docker bridge's gateway for container dynos, else 127.0.0.1).
    addons_postgres_url: str | None = None
    addons_host: str | None = None
    addon_manifests: Path | None = None  # a directory of third-party add-on manifests (*.json)
    # Logplex's store when set (every process's lines, for every API process; the last 1,500 per
    # app outlive restarts), else each process's memory (one-process `waka up`).
    redis_url: str | None = None
    # With shared storage, each home's cache of slugs is trimmed to this (least used first).
    slug_cache_mb: int = 10240
    # Seconds a source blob is kept once no pending build needs it (Heroku's source URLs are
    # good for an hour).
    source_ttl: float = 3600.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("WAKA_HOME") or Path.home() / ".local" / "share" / "waka")
        return cls(
            home=home,
            database_url=env.get("WAKA_DATABASE_URL") or None,
            database_schema=env.get("WAKA_DATABASE_SCHEMA") or "public",
            cipher_key=env.get("WAKA_CIPHER_KEY") or None,
            api_port=int(env.get("WAKA_API_PORT") or 5000),
            api_tls_port=int(env.get("WAKA_API_TLS_PORT") or 5443),
            api_tls_cert=_path(env.get("WAKA_API_TLS_CERT")),
            api_tls_key=_path(env.get("WAKA_API_TLS_KEY")),
            router_port=int(env.get("WAKA_ROUTER_PORT") or 8080),
            router_tls_port=int(env.get("WAKA_ROUTER_TLS_PORT") or 8443),
            router_tls_cert=_path(env.get("WAKA_ROUTER_TLS_CERT")),
            router_tls_key=_path(env.get("WAKA_ROUTER_TLS_KEY")),
            acme_directory=env.get("WAKA_ACME_DIRECTORY")
            or "https://acme-v02.api.letsencrypt.org/directory",
            acme_ca_file=_path(env.get("WAKA_ACME_CA_FILE")),
            acme_email=env.get("WAKA_ACME_EMAIL") or None,
            public_host=env.get("WAKA_PUBLIC_HOST") or "localhost",
            build_memory_mb=int(env.get("WAKA_BUILD_MEMORY_MB") or 2048),
            sleep_after=float(env.get("WAKA_SLEEP_AFTER") or 1800),
            runtime=env.get("WAKA_RUNTIME") or "auto",
            swarm_manager=env.get("WAKA_SWARM_MANAGER") or None,
            swarm_registry=env.get("WAKA_SWARM_REGISTRY") or None,
            run_callback_port=int(env.get("WAKA_RUN_CALLBACK_PORT") or 0),
            addons_postgres_url=env.get("WAKA_ADDONS_POSTGRES_URL") or None,
            addons_host=env.get("WAKA_ADDONS_HOST") or None,
            addon_manifests=Path(env["WAKA_ADDON_MANIFESTS"])
            if env.get("WAKA_ADDON_MANIFESTS")
            else None,
            redis_url=env.get("WAKA_REDIS_URL") or None,
            slug_cache_mb=int(env.get("WAKA_SLUG_CACHE_MB") or 10240),
            source_ttl=float(env.get("WAKA_SOURCE_TTL") or 3600),
        )

    @property
    def api_tls_url(self) -> str | None:
        """Where clients off this host reach the API (and git): None with TLS off."""
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"https://{host}:{self.api_tls_port}" if self.api_tls_port else None

    @property
    def platform_id(self) -> str:
        """Names this installation in labels of shared resources (containers): its database
        and schema on PostgreSQL, which every process of the installation shares whatever its
        home (a worker taking over adopts the dynos another started); its home on SQLite."""
        if self.database_url:
            url = urlparse(self.database_url)
            where = f"{url.hostname}|{url.port or 5432}|{url.path}|{self.database_schema}"
        else:
            where = f"{self.home.resolve()}||{self.database_schema}"
        return hashlib.sha256(where.encode()).hexdigest()[:12]

    @property
    def instance_id(self) -> str:
        """Names this process's home: what one process of the installation alone owns (the
        attached one-off dynos its API serves)."""
        return hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]

    @property
    def api_url(self) -> str:
        """The API in the URLs it hands out (git, build output, log streams): plain HTTP for a
        loopback host, else HTTPS, since plain HTTP then answers on loopback only."""
        if self.api_tls_url and not is_loopback(self.public_host):
            return self.api_tls_url
        return f"http://{self.public_host}:{self.api_port}"

    def web_url(self, app_name: str) -> str:
        return f"http://{app_name}.{self.public_host}:{self.router_port}/"

    def git_url(self, app_name: str) -> str:
        return f"{self.api_url}/{app_name}.git"

    @property
    def uses_postgres(self) -> bool:
        return self.database_url is not None

    def eventsourcing_env(self) -> dict[str, str]:
        """The eventsourcing library's settings for the ledger's event store."""
        env: dict[str, str] = {"COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"}
        if self.cipher_key:
            env["CIPHER_TOPIC"] = "eventsourcing.cipher:AESCipher"
            env["CIPHER_KEY"] = self.cipher_key
        if self.database_url:
            url = urlparse(self.database_url)
            if url.scheme not in ("postgres", "postgresql"):
                raise ValueError("WAKA_DATABASE_URL must be a postgresql:// URL")
            env.update(
                PERSISTENCE_MODULE="eventsourcing.postgres",
                POSTGRES_DBNAME=unquote(url.path.lstrip("/")) or "postgres",
                POSTGRES_HOST=url.hostname or "localhost",
                POSTGRES_PORT=str(url.port or 5432),
                POSTGRES_USER=unquote(url.username or ""),
                POSTGRES_PASSWORD=unquote(url.password or ""),
                POSTGRES_SCHEMA=self.database_schema,
                POSTGRES_POOL_SIZE="10",
                POSTGRES_MAX_OVERFLOW="20",
                # A pooled connection is checked before use: after a restart of PostgreSQL the
                # first write of an idle API must not get a dead connection (a 503).
                POSTGRES_PRE_PING="y",
            )
        else:
            env.update(
                PERSISTENCE_MODULE="eventsourcing.sqlite",
                SQLITE_DBNAME=str(self.home / "ledger.sqlite"),
                SQLITE_LOCK_TIMEOUT="30",
            )
        return env


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (`[::1]` too)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None
