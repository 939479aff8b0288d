"""Log sessions over HTTP on both backends: `POST /apps/:app/log-sessions`, then the
`logplex_url` read as Server-Sent Events as the Heroku CLI does (recent lines, `--tail`);
and the API log reactor's `app[api]` lines."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from waka.api.app import RequestIdMiddleware
from waka.api.routes.logs import routes
from waka.bootstrap import Platform
from waka.domain.actors import Actor
from waka.logplex import Logplex
from waka.logplex.sessions import LogSessions
from waka.reactors.api_log import ApiLog

ACCEPT = "application/vnd.heroku+json; version=3.sdk"
OWNER = "owner@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    platform: Platform
    logplex: Logplex
    clock: Clock
    api: Starlette
    client: TestClient
    key: str
    actor: Actor
    app_id: str

    def post_session(self, body: Any, key: str | None = None, app: str = "shop") -> httpx.Response:
        headers = {"Accept": ACCEPT, "Authorization": f"Bearer {key or self.key}"}
        return self.client.post(f"/apps/{app}/log-sessions", json=body, headers=headers)

    def stream_path(self, body: Any) -> str:
        created = self.post_session(body)
        assert created.status_code == 201, created.text
        return urlsplit(created.json()["logplex_url"]).path


def build_api(platform: Platform, logplex: Logplex, sessions: LogSessions) -> Starlette:
    api = Starlette(routes=routes(platform, logplex, sessions, heartbeat=0.3))
    api.add_middleware(RequestIdMiddleware)  # endpoint() answers with the request's id
    return api


@pytest.fixture
def env(platform: Platform) -> Env:
    account, key = platform.ledger.register_user(OWNER)
    actor = account.as_actor()
    app = platform.ledger.create_app(actor, "shop")
    platform.projector.catch_up()
    logplex, clock = Logplex(), Clock()
    api = build_api(platform, logplex, LogSessions(clock=clock))
    client = TestClient(api, raise_server_exceptions=False)
    return Env(platform, logplex, clock, api, client, key, actor, str(app.id))


def sse(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE events as the eventsource package reads them; comments come out as {"comment"}."""
    event: dict[str, str] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            event[name] = f"{event[name]}\n{value}" if name in event else value
    if event:
        yield event


def data_lines(body: str) -> list[str]:
    """What `heroku logs` prints: each event's data, split on newlines."""
    out = []
    for event in sse(iter(body.split("\n"))):
        if "data" in event:
            out.extend(event["data"].strip().split("\n"))
    return out


# --- POST /apps/:app/log-sessions ------------------------------------------------------------


def test_log_session_has_herokus_shape(env: Env) -> None:
    created = env.post_session({"lines": 10, "tail": False})
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"created_at", "id", "logplex_url", "updated_at"}
    prefix = f"{env.platform.settings.api_url}/log-streams/"
    assert body["logplex_url"].startswith(prefix)
    token = body["logplex_url"][len(prefix) :]
    assert len(token) >= 43  # 256 bits, urlsafe base64
    assert env.post_session({}).json()["logplex_url"] != body["logplex_url"]
    assert created.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"lines": 0}, "lines"),
        ({"lines": "ten"}, "lines"),
        ({"lines": True}, "lines"),
        ({"lines": 1.5}, "lines"),
        ({"source": "kernel"}, "source"),
        ({"dyno": "web 1"}, "dyno"),
        ({"dyno": 7}, "dyno"),
        ({"dyno": "web", "type": "worker"}, "one of"),
        ({"tail": "yes"}, "tail"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_log_session_requests_are_422(env: Env, body: Any, needle: str) -> None:
    response = env.post_session(body)
    assert response.status_code == 422
    assert response.json()["id"] == "invalid_params"
    assert needle in response.json()["message"]


def test_log_sessions_need_a_key_and_the_app(env: Env) -> None:
    anonymous = env.client.post("/apps/shop/log-sessions", json={}, headers={"Accept": ACCEPT})
    assert anonymous.status_code == 401
    _, stranger = env.platform.ledger.register_user("stranger@example.com")
    env.platform.projector.catch_up()
    forbidden = env.post_session({}, key=stranger)
    assert forbidden.status_code == 403 and forbidden.json()["id"] == "forbidden"
    assert env.post_session({}, app="no-such-app").status_code == 404
    assert env.post_session({}, app=env.app_id).status_code == 201  # by id too


# --- GET /log-streams/:token -------------------------------------------------------------------


def test_recent_lines_as_server_sent_events(env: Env) -> None:
    for i in range(1, 6):
        env.logplex.emit(env.app_id, "app", f"web.{1 + i % 2}", f"request {i}")
    env.logplex.emit(env.app_id, "heroku", "router", "at=info status=200")

    response = env.client.get(
        env.stream_path({"lines": 4}), headers={"Accept": "text/event-stream"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    events = list(sse(iter(response.text.split("\n"))))
    lines = [x.format() for x in env.logplex.recent(env.app_id, 4)]
    assert [e["data"] for e in events] == lines  # one event per line
    assert [int(e["id"]) for e in events] == [3, 4, 5, 6]
    assert response.text.endswith("\n\n")
    assert lines[-1].endswith(" heroku[router]: at=info status=200")


def test_stream_filters_by_dyno_and_source(env: Env) -> None:
    for source, dyno in [("app", "web.1"), ("app", "web.2"), ("app", "worker.1")]:
        env.logplex.emit(env.app_id, source, dyno, dyno)
    env.logplex.emit(env.app_id, "heroku", "web.1", "State changed from starting to up")

    def shown(body: dict[str, Any]) -> list[str]:
        text = env.client.get(env.stream_path(body)).text
        return [line.split(": ", 1)[1] for line in data_lines(text)]

    assert shown({"dyno": "web"}) == ["web.1", "web.2", "State changed from starting to up"]
    assert shown({"dyno": "web.1", "source": "app"}) == ["web.1"]
    assert shown({"type": "worker"}) == ["worker.1"]
    assert shown({"dyno_name": "web.2"}) == ["web.2"]
    assert shown({"source": "heroku"}) == ["State changed from starting to up"]
    assert shown({"lines": 1}) == ["State changed from starting to up"]


def test_default_is_the_last_100_lines(env: Env) -> None:
    for i in range(250):
        env.logplex.emit(env.app_id, "app", "web.1", str(i))
    shown = data_lines(env.client.get(env.stream_path({})).text)
    assert [line.rsplit(" ", 1)[1] for line in shown] == [str(i) for i in range(150, 250)]
    assert len(data_lines(env.client.get(env.stream_path({"lines": 1500})).text)) == 250
    # More than the buffer holds is the whole buffer, as on Heroku (`heroku logs -n 5000`).
    assert len(data_lines(env.client.get(env.stream_path({"lines": 5000})).text)) == 250


def test_an_app_without_lines_gives_an_empty_stream(env: Env) -> None:
    response = env.client.get(env.stream_path({}))
    assert response.status_code == 200 and response.text == ""


def test_unknown_expired_and_orphaned_streams_are_404(env: Env) -> None:
    missing = env.client.get("/log-streams/not-a-token")
    assert missing.status_code == 404 and missing.json()["id"] == "not_found"

    path = env.stream_path({})
    env.clock.now += 200
    assert env.client.get(path).status_code == 200  # use renews it
    env.clock.now += 200
    assert env.client.get(path).status_code == 200
    env.clock.now += 301
    assert env.client.get(path).status_code == 404

    path = env.stream_path({})
    env.platform.ledger.destroy_app(env.actor, UUID(env.app_id))
    env.platform.projector.catch_up()
    assert env.client.get(path).status_code == 404


# --- --tail, over a real HTTP server ---------------------------------------------------------


@contextlib.contextmanager
def serving(api: Starlette) -> Iterator[str]:
    """The API on a loopback port, served by Hypercorn (as `waka up` does) in a thread."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await serve(api, config, shutdown_trigger=state["stop"].wait)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{base}/log-streams/probe", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield base
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_tail_streams_new_lines_until_the_client_leaves(env: Env) -> None:
    for i in range(3):
        env.logplex.emit(env.app_id, "app", "web.1", f"old {i}")
    path = env.stream_path({"tail": True, "lines": 2})
    with serving(env.api) as base, httpx.Client(timeout=10) as client:
        headers = {"Accept": "text/event-stream", "User-Agent": "heroku-run"}
        with client.stream("GET", base + path, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            events = sse(response.iter_lines())
            assert next(events) == {"comment": "waka logplex"}
            backlog = [next(events)["data"] for _ in range(2)]
            assert [x.rsplit(" ", 1)[1] for x in backlog] == ["1", "2"]

            wait_for(lambda: env.logplex.subscribers(env.app_id) == 1)
            emitter = threading.Thread(
                target=env.logplex.emit, args=(env.app_id, "heroku", "router", "at=info new\nb")
            )
            emitter.start()
            fresh = [next(events), next(events)]
            assert [e["data"].split(": ", 1)[1] for e in fresh] == ["at=info new", "b"]
            assert [int(e["id"]) for e in fresh] == [4, 5]
            assert next(events) == {"comment": "heartbeat"}  # 0.3 s of quiet in this test
        # the client hung up: the server lets go of its feed
        wait_for(lambda: env.logplex.subscribers(env.app_id) == 0)


def test_tail_resumes_after_last_event_id(env: Env) -> None:
    for i in range(1, 6):
        env.logplex.emit(env.app_id, "app", "web.1", f"line {i}")
    path = env.stream_path({"tail": True, "lines": 1})
    with serving(env.api) as base, httpx.Client(timeout=10) as client:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": "3"}
        with client.stream("GET", base + path, headers=headers) as response:
            events = (e for e in sse(response.iter_lines()) if "data" in e)
            got = [next(events)["data"].rsplit(" ", 2)[1:] for _ in range(2)]
    assert got == [["line", "4"], ["line", "5"]]


def test_tail_ends_when_the_app_is_destroyed(env: Env) -> None:
    path = env.stream_path({"tail": True})
    with (
        serving(env.api) as base,
        httpx.Client(timeout=10) as client,
        client.stream("GET", base + path) as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == ": waka logplex"
        wait_for(lambda: env.logplex.subscribers(env.app_id) == 1)
        env.logplex.forget(env.app_id)
        assert [x for x in lines if x] == []  # the server closes the stream


# --- the API log -----------------------------------------------------------------------------


def api_lines(logplex: Logplex, app_id: str) -> list[str]:
    lines = logplex.recent(app_id, lines=1500)
    assert {(x.source, x.dyno) for x in lines} <= {("app", "api")}
    return [x.message for x in lines]


def test_api_log_tells_of_releases_config_scaling_builds(platform: Platform, actor: Actor) -> None:
    ledger = platform.ledger
    app = ledger.create_app(actor, "shop")
    app_id = str(app.id)
    logplex = Logplex()
    api_log = ApiLog(ledger, logplex)
    assert api_log.poll() == 0
    assert logplex.recent(app_id) == []  # earlier events are not replayed

    by = f"by {actor['email']}"
    ledger.set_config(actor, app.id, {"FOO": "1", "BAR": "2"})
    ledger.set_config(actor, app.id, {"FOO": None})
    api_log.poll()
    assert api_lines(logplex, app_id) == [
        f"Set FOO, BAR config vars {by}",
        f"Release v2 created {by}",
        f"Remove FOO config vars {by}",
        f"Release v3 created {by}",
    ]

    build_id = ledger.request_build(actor, app.id, "http://127.0.0.1/source.tgz", "1a2b3c4d5e6f")
    slug = {
        "id": "slug-1",
        "process_types": {"web": "python app.py", "worker": "python work.py"},
        "commit": "1a2b3c4d5e6f",
        "checksum": "SHA256:0",
        "size": 1,
    }
    ledger.finish_build(app.id, build_id, slug, None, actor)
    ledger.scale(actor, app.id, [{"type": "web", "quantity": 2, "size": "Standard-2X"}])
    ledger.rollback(actor, app.id, 2)
    failed = ledger.request_build(actor, app.id, "http://127.0.0.1/source.tgz")
    ledger.fail_build(app.id, failed, "compile failed", actor)
    api_log.poll()
    assert api_lines(logplex, app_id)[4:] == [
        f"Build started {by}",
        "Build succeeded",
        f"Deploy 1a2b3c4d {by}",
        f"Release v4 created {by}",
        f"Scaled to web@1:Standard-1X worker@0:Standard-1X {by}",
        f"Scaled to web@2:Standard-2X worker@0:Standard-1X {by}",
        f"Rollback to v2 {by}",
        f"Release v5 created {by}",
        f"Build started {by}",
        "Build failed",
    ]
    lines = logplex.recent(app_id, lines=1500)
    assert lines[-1].format().endswith(" app[api]: Build failed")
    assert api_log.poll() == 0  # nothing twice

    ledger.destroy_app(actor, app.id)
    api_log.poll()
    assert logplex.recent(app_id) == []  # forgotten with the app


def test_api_log_reactor_is_woken_by_the_ledger(platform: Platform, actor: Actor) -> None:
    from waka.reactors.lifecycle import Reactors

    app = platform.ledger.create_app(actor, "shop")
    logplex = Logplex()
    api_log = ApiLog(platform.ledger, logplex, interval=60)  # no timer: the save wakes it
    reactors = Reactors(platform.leases, platform.projector.catch_up)
    reactors.add(api_log, lease="api-log")
    platform.notifications.subscribe(reactors.saved)
    platform.notifications.start()
    reactors.start()
    try:
        wait_for(lambda: platform.leases.taken("api-log"))
        platform.ledger.set_config(actor, app.id, {"FOO": "1"})
        wait_for(lambda: len(logplex.recent(str(app.id))) == 2)
    finally:
        reactors.stop()
        platform.notifications.stop()
    assert api_lines(logplex, str(app.id))[-1] == f"Release v2 created by {actor['email']}"


def test_api_log_goes_on_where_the_last_leader_stopped(platform: Platform, actor: Actor) -> None:
    """The position is in the store: a worker taking over (or a platform started again) logs
    the events the last leader did not, and none it did."""
    ledger = platform.ledger
    app = ledger.create_app(actor, "shop")
    app_id = str(app.id)
    by = f"by {actor['email']}"
    first = ApiLog(ledger, Logplex(), platform.store)
    # From the platform's first start (its bootstrap), not from this leader's: the app's
    # creation, before any worker led the API log, is logged.
    assert first.poll() > 0
    ledger.set_config(actor, app.id, {"FOO": "1"})
    first.poll()
    assert api_lines(first.logplex, app_id)[-1] == f"Release v2 created {by}"
    # The leader dies; two changes are saved before another worker takes the lead.
    ledger.set_config(actor, app.id, {"BAR": "2"})
    ledger.set_config(actor, app.id, {"BAZ": "3"})
    taker = ApiLog(ledger, Logplex(), platform.store)
    taker.took_over()
    taker.poll()
    assert api_lines(taker.logplex, app_id) == [
        f"Set BAR config vars {by}",
        f"Release v3 created {by}",
        f"Set BAZ config vars {by}",
        f"Release v4 created {by}",
    ]
    # The old leader, back, takes the lead again later: nothing twice.
    first.took_over()
    assert first.poll() == 0


def test_api_log_logs_at_most_a_backlog_after_a_long_stop(
    platform: Platform, actor: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from waka.reactors import api_log as module

    ledger = platform.ledger
    app = ledger.create_app(actor, "shop")
    ApiLog(ledger, Logplex(), platform.store)  # the platform's first start
    for n in range(6):  # two notifications each: the config change and its release
        ledger.set_config(actor, app.id, {"N": str(n)})
    monkeypatch.setattr(module, "BACKLOG", 4)
    again = ApiLog(ledger, Logplex(), platform.store)
    again.poll()
    assert api_lines(again.logplex, str(app.id)) == [
        f"Set N config vars by {actor['email']}",
        f"Release v6 created by {actor['email']}",
        f"Set N config vars by {actor['email']}",
        f"Release v7 created by {actor['email']}",
    ]
