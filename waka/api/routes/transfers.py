"""App transfers between people (`heroku apps:transfer EMAIL`): the owner offers, the recipient
accepts or declines (`PATCH /account/app-transfers/{id}`), the owner may cancel. Into a team
it is `PATCH /teams/apps/{app}` (waka/api/routes/teams.py), at once."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from starlette.routing import Route

from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError, not_found
from waka.bootstrap import Platform
from waka.domain import access
from waka.projections.apps import find_app
from waka.projections.store import Row
from waka.projections.transfers import find_transfer, transfers_of_user


def _shape(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "app": {"id": row["app_id"], "name": row["app_name"]},
        "owner": {"id": row["owner_id"], "email": row["owner_email"]},
        "recipient": {"id": row["recipient_id"], "email": row["recipient_email"]},
        "state": row["state"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _visible(ctx: Ctx) -> Row:
    row = find_transfer(ctx.platform.store, ctx.param("transfer"))
    if row is None or ctx.user["id"] not in (row["owner_id"], row["recipient_id"]):
        raise not_found("Couldn't find that app transfer.")
    return row


def create_transfer(ctx: Ctx) -> Reply:
    body = ctx.object_body()
    app_ident, recipient = body.get("app"), body.get("recipient")
    if isinstance(app_ident, dict):
        app_ident = app_ident.get("name") or app_ident.get("id")
    if isinstance(recipient, dict):
        recipient = recipient.get("email") or recipient.get("id")
    if not isinstance(app_ident, str) or not isinstance(recipient, str) or not recipient:
        raise ApiError(422, "invalid_params", "app and recipient (an email) are required.")
    app = find_app(ctx.platform.store, app_ident)
    if app is None:
        raise not_found("Couldn't find that app.")
    ctx.require(app, access.MANAGE)
    transfer_id = ctx.command(
        ctx.platform.ledger.request_transfer, ctx.actor, UUID(app["id"]), recipient.strip()
    )
    row = find_transfer(ctx.platform.store, transfer_id)
    assert row is not None
    return Reply(_shape(row), 201)


def list_transfers(ctx: Ctx) -> Reply:
    return Reply([_shape(r) for r in transfers_of_user(ctx.platform.store, ctx.user["id"])])


def show_transfer(ctx: Ctx) -> Reply:
    return Reply(_shape(_visible(ctx)))


def _answer(ctx: Ctx, state: str) -> Reply:
    row = _visible(ctx)
    if row["state"] != "pending":
        raise ApiError(422, "invalid_params", f"This transfer is already {row['state']}.")
    ctx.command(
        ctx.platform.ledger.answer_transfer, ctx.actor, UUID(row["app_id"]), row["id"], state
    )
    updated = find_transfer(ctx.platform.store, row["id"])
    assert updated is not None
    return Reply(_shape(updated))


def update_transfer(ctx: Ctx) -> Reply:
    state = ctx.object_body().get("state")
    if state not in ("accepted", "declined"):
        raise ApiError(422, "invalid_params", "state must be accepted or declined.")
    return _answer(ctx, str(state))


def cancel_transfer(ctx: Ctx) -> Reply:
    return _answer(ctx, "cancelled")


def routes(platform: Platform) -> list[Route]:
    one = "/account/app-transfers/{transfer}"
    return [
        Route("/account/app-transfers", endpoint(platform, list_transfers), methods=["GET"]),
        Route("/account/app-transfers", endpoint(platform, create_transfer), methods=["POST"]),
        Route(one, endpoint(platform, show_transfer), methods=["GET"]),
        Route(one, endpoint(platform, update_transfer), methods=["PATCH"]),
        Route(one, endpoint(platform, cancel_transfer), methods=["DELETE"]),
    ]
