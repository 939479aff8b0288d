"""The add-on catalogue: services and their plans, as Heroku names them.

Pure data. A plan's `limits` are what its provider enforces on the resource it makes
(connections, storage, memory); prices are shown as Heroku shows them and billed by no one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID, uuid5

_NAMESPACE = UUID("0b6f7c1e-5a4e-4f0e-9a57-7761a2b0c0de")


@dataclass(frozen=True)
class Plan:
    name: str  # "essential-0", unique within its service
    human_name: str
    description: str
    price_cents: int  # per month
    limits: dict[str, int] = field(default_factory=dict)
    default: bool = False

    def limit(self, key: str) -> int:
        return self.limits[key]


@dataclass(frozen=True)
class Service:
    name: str  # "heroku-postgresql"
    human_name: str
    description: str
    addon_prefix: str  # add-on names are "<prefix>-<adjective>-<number>", e.g. postgresql-...
    default_attachment: str  # the first attachment's name on an app: DATABASE, REDIS
    color_prefix: str  # further attachments: HEROKU_POSTGRESQL_<COLOR>
    plans: tuple[Plan, ...]
    # Heroku Postgres also names every database by a colour (HEROKU_POSTGRESQL_PINK_URL) beside
    # DATABASE_URL, so a second database keeps a stable name when DATABASE is promoted.
    color_alias: bool = False

    @property
    def id(self) -> UUID:
        return uuid5(_NAMESPACE, f"service:{self.name}")

    def plan_id(self, plan: Plan) -> UUID:
        return uuid5(_NAMESPACE, f"plan:{self.name}:{plan.name}")

    @property
    def default_plan(self) -> Plan:
        return next(p for p in self.plans if p.default)

    def find_plan(self, name: str) -> Plan | None:
        return next((p for p in self.plans if p.name == name), None)


HEROKU_POSTGRESQL = Service(
    name="heroku-postgresql",
    human_name="Heroku Postgres",
    description="A PostgreSQL database of its own: a role and a database on the platform's server.",
    addon_prefix="postgresql",
    default_attachment="DATABASE",
    color_prefix="HEROKU_POSTGRESQL",
    plans=(
        Plan(
            "essential-0",
            "Essential 0",
            "1 GB storage, 20 connections",
            500,
            {"connections": 20, "storage_mb": 1024},
            default=True,
        ),
        Plan(
            "essential-1",
            "Essential 1",
            "10 GB storage, 20 connections",
            900,
            {"connections": 20, "storage_mb": 10240},
        ),
        Plan(
            "essential-2",
            "Essential 2",
            "32 GB storage, 40 connections",
            2000,
            {"connections": 40, "storage_mb": 32768},
        ),
        Plan(
            "standard-0",
            "Standard 0",
            "64 GB storage, 120 connections",
            5000,
            {"connections": 120, "storage_mb": 65536},
        ),
    ),
    color_alias=True,
)

HEROKU_REDIS = Service(
    name="heroku-redis",
    human_name="Heroku Key-Value Store",
    description="A Redis instance of its own: its own server process, password and memory limit.",
    addon_prefix="redis",
    default_attachment="REDIS",
    color_prefix="HEROKU_REDIS",
    plans=(
        Plan(
            "mini",
            "Mini",
            "25 MB, 20 connections",
            300,
            {"memory_mb": 25, "connections": 20},
            default=True,
        ),
        Plan(
            "premium-0",
            "Premium 0",
            "50 MB, 40 connections",
            1500,
            {"memory_mb": 50, "connections": 40},
        ),
        Plan(
            "premium-1",
            "Premium 1",
            "100 MB, 80 connections",
            3000,
            {"memory_mb": 100, "connections": 80},
        ),
        Plan(
            "premium-2",
            "Premium 2",
            "250 MB, 200 connections",
            6000,
            {"memory_mb": 250, "connections": 200},
        ),
    ),
)

BUILT_IN: tuple[Service, ...] = (HEROKU_POSTGRESQL, HEROKU_REDIS)

# Third-party services the operator added (add-on manifests, read at start by the composition
# root). Keyed by name: registering a service again replaces it.
_registered: dict[str, Service] = {}


def register(service: Service) -> None:
    if any(s.name == service.name for s in BUILT_IN):
        raise ValueError(f"{service.name} is a built-in add-on service")
    _registered[service.name] = service


def services() -> list[Service]:
    return [*BUILT_IN, *_registered.values()]


def find_service(name_or_id: str) -> Service | None:
    return next((s for s in services() if name_or_id in (s.name, str(s.id))), None)
