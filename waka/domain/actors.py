"""Who did it: every ledger event carries an actor, so the audit log is a query over the ledger."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4, uuid5

Actor = dict[str, str]  # {"id": account id, "email": ...}; "request_id" when a request made it

OPERATOR: Actor = {"id": "", "email": "operator"}  # the `waka` CLI run on the host itself

_MADE_BY_REQUEST = UUID("6f1c1f0e-4a8e-5b8e-9a39-77c0f1a2d9b4")


def person(actor: Actor) -> Actor:
    """The actor as an account (an owner, a member), without what came with one request."""
    return {"id": actor["id"], "email": actor["email"]}


def made_by_request(kind: str, actor: Actor) -> UUID:
    """The id of the `kind` of thing this actor's request makes: the same request sent again
    (a client retrying one whose answer it lost, as the Heroku CLI does with the same
    Request-Id when its connection breaks) names the same one, so it is not made twice. A new
    id when the actor brings no request id."""
    request = actor.get("request_id")
    if not request:
        return uuid4()
    return uuid5(_MADE_BY_REQUEST, f"{kind}\n{actor['id']}\n{request}")


def request_of(actor: Actor, what: Any) -> list[Any]:
    """What a write remembers of the request that made it: its id, who sent it, and what."""
    return [actor.get("request_id"), actor.get("id"), what]


def sent_again(last: list[Any] | None, actor: Actor, what: Any) -> bool:
    """Whether this is the request behind `last` (a request_of) sent again: a client retrying
    one whose answer it lost (the Heroku CLI does, with the same Request-Id, when its
    connection breaks). It was applied: it is answered as things stand, not applied twice."""
    return bool(actor.get("request_id")) and last == request_of(actor, what)
