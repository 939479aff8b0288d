"""One-off dynos: `POST /apps/:app/dynos` (`heroku run`, `heroku run:detached`).

With `attach: true` the dyno is created but not started, and the reply's `attach_url` points
the CLI at the rendezvous server, which starts it once the CLI is there. With `attach: false`
it starts at once and its output goes to the app's log as `app[run.NNNN]`.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

import orjson
from starlette.routing import Route

from waka.adapters.one_off import OneOffDynos, OneOffSpec
from waka.adapters.slugs import SlugNotFound
from waka.api.endpoint import Ctx, Reply, endpoint
from waka.api.errors import ApiError
from waka.bootstrap import Platform
from waka.domain import rules
from waka.domain.actors import Actor, made_by_request
from waka.domain.app import release_id
from waka.features import metadata_env
from waka.projections.base import iso
from waka.projections.config_vars import config_of
from waka.projections.store import Row
from waka.rendezvous.server import RendezvousServer

log = logging.getLogger("waka.run")

_ENV_NAME = re.compile(r"^\w+$")
_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,29}$")
MAX_COMMAND = 32 * 1024


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_params", message)


class _Engine:
    """The Docker side, made on first use (the API starts, and its tests run, without it)."""

    def __init__(self, platform: Platform, dynos: OneOffDynos | None) -> None:
        self.platform = platform
        self.dynos = dynos
        self._lock = threading.Lock()

    def get(self) -> OneOffDynos:
        with self._lock:
            if self.dynos is None:
                self.dynos = self.platform.one_offs
            if self.dynos is None:
                raise ApiError(
                    503,
                    "unavailable",
                    "One-off dynos need a Docker engine with the stack image "
                    "(`waka stack build`); this waka has none.",
                )
            return self.dynos


def recover(platform: Platform, dynos: OneOffDynos | None = None) -> None:
    """At start-up: clean up one-off containers a previous waka left (see OneOffDynos)."""
    dynos = dynos or platform.one_offs
    if dynos is not None:
        dynos.recover()


def routes(
    platform: Platform, rendezvous: RendezvousServer | None, dynos: OneOffDynos | None = None
) -> list[Route]:
    engine = _Engine(platform, dynos)

    def create(ctx: Ctx) -> Reply:
        app = ctx.app()
        body = ctx.object_body()
        command = _command(body.get("command"), app)
        attach = _flag(body, "attach")
        no_tty = _flag(body, "force_no_tty")
        kind = body.get("type") or "run"
        if not isinstance(kind, str) or not _TYPE.match(kind):
            raise invalid("type must be a process type name, like run.")
        size = rules.check_size(body["size"]) if body.get("size") else rules.DEFAULT_SIZE
        env = _user_env(body.get("env"))
        if attach and rendezvous is None:
            raise ApiError(503, "unavailable", "This waka runs no rendezvous server for `run`.")
        if not app["slug_id"]:
            raise invalid(f"{app['name']} has no release with code yet: push some first.")
        actor = ctx.actor_of_request  # the same request again does not run the command twice
        ledger = ctx.platform.ledger
        if not attach:
            started = ledger.one_off_started_by(actor, ctx.app_id(app), command)
            if started is not None:
                return Reply(_render(started, command, size, kind, app, None, actor), 201)
        try:
            slug_path = ctx.platform.slugs.get(app["slug_id"]).path
        except SlugNotFound:
            raise ApiError(409, "conflict", "The release's slug is not here yet.") from None
        one_offs = engine.get()
        spec = OneOffSpec(
            app_id=app["id"],
            app_name=app["name"],
            name=_free_name(one_offs.names_in_use(app["id"])),
            command=command,
            env={
                **config_of(ctx.platform.store, app["id"]),
                **metadata_env(ctx.platform.store, app["id"], app["current_release"]),
                **env,
            },
            memory_mb=rules.SIZE_MEMORY_MB.get(size, 512),
            size=size,
            release=app["current_release"],
            slug_path=slug_path,
            attach=attach,
            tty=attach and not no_tty,
        )
        ctx.platform.emit_log(
            app["id"],
            "app",
            "api",
            f"Starting process with command `{command}` by user {ctx.user['email']}",
        )
        attach_url = None
        try:
            if attach:
                assert rendezvous is not None
                attach_url = rendezvous.attach_url(rendezvous.sessions.add(one_offs.create(spec)))
            else:
                one_offs.run_detached(spec)
        except ApiError:
            raise
        except Exception as error:  # the engine, the Swarm or its registry failed
            # Not the engine's words to the user, and not the config vars' values in the log:
            # an engine may quote the dyno's spec.
            said = str(error)
            for value in spec.env.values():
                if len(value) >= 4:
                    said = said.replace(value, "[redacted]")
            log.warning("could not start %s of %s: %s", spec.name, app["name"], said)
            raise ApiError(
                503,
                "unavailable",
                f"Could not start {spec.name}: the dyno runtime failed ({type(error).__name__}). "
                "Try again; waka's log says more.",
            ) from None
        if not attach:  # started: recorded (after, so that a failed start is not taken for a run)
            ctx.command(ledger.record_one_off, actor, ctx.app_id(app), spec.name, command)
        return Reply(_render(spec.name, command, size, kind, app, attach_url, actor), 201)

    return [Route("/apps/{app}/dynos", endpoint(platform, create), methods=["POST"])]


def _command(command: object, app: Row) -> str:
    if not isinstance(command, str) or not command.strip():
        raise invalid("command must be the command to run, like `bash`.")
    if len(command) > MAX_COMMAND:
        raise invalid(f"command is over {MAX_COMMAND} characters.")
    # As on Heroku, a command that starts with a process type runs that type's command
    # (`heroku run worker`); the CLI keeps that first word bare for this.
    first, sep, rest = command.strip().partition(" ")
    process_types: dict[str, str] = orjson.loads(app["process_types"] or "{}")
    if first in process_types:
        return process_types[first] + sep + rest
    return command


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{key} must be true or false.")
    return value


def _user_env(env: object) -> dict[str, str]:
    """The CLI's env: TERM, -e variables, and COLUMNS/LINES (sent as numbers)."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise invalid("env must be an object of variable names and values.")
    found = {}
    for key, value in env.items():
        if value is None:
            continue
        if not _ENV_NAME.match(key) or isinstance(value, bool | dict | list):
            raise invalid(f"env {key!r} must be a word with a string value.")
        found[key] = str(value)
    return found


def _free_name(in_use: set[str]) -> str:
    for _ in range(100):
        name = f"run.{1000 + secrets.randbelow(9000)}"
        if name not in in_use:
            return name
    raise ApiError(409, "conflict", "Too many one-off dynos are running for this app.")


def _render(
    name: str, command: str, size: str, kind: str, app: Row, attach_url: str | None, actor: Actor
) -> dict[str, Any]:
    now = iso(datetime.now(UTC))
    release = int(app["current_release"])
    return {
        "attach_url": attach_url,
        "command": command,
        "created_at": now,
        "id": str(uuid5(made_by_request("one-off", actor), name)),  # the same when sent again
        "name": name,
        "release": {"id": str(release_id(UUID(app["id"]), release)), "version": release},
        "app": {"id": app["id"], "name": app["name"]},
        "size": size,
        "state": "starting",
        "type": kind,
        "updated_at": now,
    }
