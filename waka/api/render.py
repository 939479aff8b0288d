"""Heroku Platform API v3 JSON shapes, rendered from read-model rows."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson

from waka.config import Settings
from waka.domain import rules
from waka.domain.access import PERMISSION_DESCRIPTIONS
from waka.domain.app import release_id
from waka.projections.store import Row

_NS = uuid5(NAMESPACE_URL, "https://waka.invalid/catalogue")


def catalogue_id(kind: str, name: str) -> str:
    """Stable ids for things that are names here (regions, stacks, dyno sizes)."""
    return str(uuid5(_NS, f"{kind}:{name}"))


def named(kind: str, name: str) -> dict[str, str]:
    return {"id": catalogue_id(kind, name), "name": name}


def app(row: Row, settings: Settings, slug_size: int | None = None) -> dict[str, Any]:
    """`slug_size`: bytes of the live slug's compressed tarball (None: no slug yet)."""
    name = row["name"]
    return {
        "acm": False,
        "archived_at": None,
        "buildpack_provided_description": None,
        "build_stack": named("stack", row["stack"]),
        "created_at": row["created_at"],
        "create_status": "complete",
        "generation": named("generation", "cedar"),
        "git_url": settings.git_url(name),
        "id": row["id"],
        "internal_routing": None,
        "locked": False,
        "maintenance": bool(row["maintenance"]),
        "name": name,
        "owner": {"email": row["owner_email"], "id": row["owner_id"]},
        "process_tier": "production",
        "organization": None,
        "team": None,
        "region": named("region", row["region"]),
        "released_at": row["released_at"],
        "repo_size": None,
        "slug_size": slug_size,
        "space": None,
        "stack": named("stack", row["stack"]),
        "updated_at": row["updated_at"],
        "web_url": settings.web_url(name),
    }


def release(row: Row, app_row: Row, settings: Settings) -> dict[str, Any]:
    slug = {"id": row["slug_id"]} if row["slug_id"] else None
    # Only a release with a release phase has output; its random id is the permission, as
    # Heroku's stream URL is (the CLI fetches it without credentials).
    output = f"{settings.api_url}/release-output/{row['output_id']}" if row["output_id"] else None
    return {
        "addon_plan_names": orjson.loads(row["addon_plan_names"]),
        "artifacts": [{"type": "slug", "id": row["slug_id"]}] if row["slug_id"] else [],
        "app": {"id": app_row["id"], "name": app_row["name"]},
        "created_at": row["created_at"],
        "description": row["description"],
        "id": row["id"],
        "updated_at": row["updated_at"],
        "slug": slug,
        "status": row["status"],
        "user": {"id": row["user_id"], "email": row["user_email"]},
        "version": row["version"],
        "current": row["version"] == app_row["current_release"],
        "output_stream_url": output,
        "eligible_for_rollback": row["status"] == "succeeded",
    }


def formation(row: Row, app_row: Row) -> dict[str, Any]:
    commands = orjson.loads(app_row["process_types"])
    return {
        "app": {"id": app_row["id"], "name": app_row["name"]},
        "command": commands.get(row["type"], ""),
        "created_at": row["created_at"],
        "dyno_size": named("dyno-size", row["size"]),
        "id": row["id"],
        "quantity": row["quantity"],
        "size": row["size"],
        "type": row["type"],
        "updated_at": row["updated_at"],
    }


def account(row: Row) -> dict[str, Any]:
    return {
        "allow_tracking": False,
        "beta": False,
        "created_at": row["created_at"],
        "email": row["email"],
        "federated": False,
        "id": row["id"],
        "identity_provider": None,
        "last_login": None,
        "name": row["name"] or None,
        "sms_number": None,
        "suspended_at": None,
        "delinquent_at": None,
        "two_factor_authentication": False,
        "updated_at": row["updated_at"],
        "verified": True,
        "country_of_residence": None,
        "default_organization": None,
        "default_team": None,
    }


def collaborator(app_row: Row) -> dict[str, Any]:
    """The owner, as Heroku lists it among an app's collaborators."""
    return {
        "app": {"id": app_row["id"], "name": app_row["name"]},
        "created_at": app_row["created_at"],
        "id": catalogue_id("collaborator", f"{app_row['id']}:{app_row['owner_id']}"),
        "permissions": [],
        "role": "owner",
        "updated_at": app_row["created_at"],
        "user": {"email": app_row["owner_email"], "federated": False, "id": app_row["owner_id"]},
    }


def granted_collaborator(app_row: Row, row: Row) -> dict[str, Any]:
    """A collaborator (waka_collaborators row) with the permissions the access policy grants."""
    return {
        "app": {"id": app_row["id"], "name": app_row["name"]},
        "created_at": row["created_at"],
        "id": catalogue_id("collaborator", f"{app_row['id']}:{row['user_id']}"),
        "permissions": [
            {"name": p, "description": PERMISSION_DESCRIPTIONS[p]} for p in row["permissions"]
        ],
        "role": "collaborator",
        "updated_at": row["updated_at"],
        "user": {"email": row["email"], "federated": False, "id": row["user_id"]},
    }


def build(row: Row, app_row: Row, settings: Settings) -> dict[str, Any]:
    buildpacks = orjson.loads(row["buildpacks"])
    release = None
    if row["release_version"] is not None:
        release = {"id": str(release_id(UUID(app_row["id"]), row["release_version"]))}
    return {
        "app": {"id": app_row["id"]},
        "buildpacks": [{"url": b, "name": b} for b in buildpacks] or None,
        "created_at": row["created_at"],
        "id": row["id"],
        "output_stream_url": f"{settings.api_url}/builds/{row['id']}/output",
        "source_blob": {
            "checksum": None,
            "url": row["source_url"],
            "version": row["source_version"] or None,
            "version_description": None,
        },
        "release": release,
        "slug": {"id": row["slug_id"]} if row["slug_id"] else None,
        "stack": rules.DEFAULT_STACK,
        "status": row["status"],
        "updated_at": row["updated_at"],
        "user": {"id": row["user_id"], "email": row["user_email"]},
    }


def slug(row: Row) -> dict[str, Any]:
    return {
        "blob": None,  # slugs are served to dynos from the slug store, not downloaded
        "buildpack_provided_description": row["buildpack_description"] or None,
        "checksum": row["checksum"],
        "commit": row["commit_sha"] or None,
        "commit_description": None,
        "created_at": row["created_at"],
        "id": row["id"],
        "process_types": orjson.loads(row["process_types"]),
        "size": row["size"],
        "stack": named("stack", row["stack"] or rules.DEFAULT_STACK),
        "updated_at": row["created_at"],
    }


def buildpack_installations(urls: list[str]) -> list[dict[str, Any]]:
    return [
        {"buildpack": {"url": url, "name": url}, "ordinal": ordinal}
        for ordinal, url in enumerate(urls)
    ]
