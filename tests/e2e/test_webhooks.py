"""App webhooks with the real Heroku CLI and a real HTTP receiver that checks every signature:
`webhooks:add` (the signing secret shown once), `webhooks`, `webhooks:info`, `webhooks:update`,
`webhooks:deliveries`, `webhooks:deliveries:info`, `webhooks:events`, `webhooks:remove`.

The receiver goes down (its port refuses connections) while releases happen and while waka
itself is killed and restarted; once it is back it gets every missed event, in order, once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .conftest import (
    Api,
    WakaServer,
    app_repo,
    flat,
    free_port,
    git_url,
    key_values,
    section,
    unique_name,
    wait_for,
)

pytestmark = pytest.mark.e2e


class Receiver:
    """An HTTP server on a fixed port that can go down and come back on it. Each POST whose
    `Heroku-Webhook-Hmac-SHA256` is the HMAC of its body under `secret` is kept; any other is
    answered 401 and counted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.secret = ""
        self.got: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                digest = hmac.new(receiver.secret.encode(), body, hashlib.sha256).digest()
                signed = base64.b64encode(digest).decode()
                sent = self.headers.get("Heroku-Webhook-Hmac-SHA256", "")
                with receiver._lock:
                    if hmac.compare_digest(signed, sent):
                        receiver.got.append(json.loads(body))
                        status = 200
                    else:
                        receiver.bad_signatures += 1
                        status = 401
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Closed: connections to the port are refused."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def releases(self) -> list[int]:
        with self._lock:
            return [e["data"]["version"] for e in self.got if e["resource"] == "release"]


@pytest.fixture
def receiver() -> Any:
    receiver = Receiver()
    receiver.up()
    yield receiver
    if receiver._server is not None:
        receiver.down()


def deliveries(server: WakaServer, app: str) -> list[list[str]]:
    """`heroku webhooks:deliveries` rows, oldest first, split on runs of spaces."""
    out = server.heroku("webhooks:deliveries", "-a", app).stdout
    return [
        re.split(r"\s{2,}", line.strip())
        for line in out.splitlines()
        if re.match(r"\s*[0-9a-f]{8}-", line)
    ]


def test_webhooks_with_the_heroku_cli_and_a_receiver_that_goes_down(
    server: WakaServer, receiver: Receiver
) -> None:
    app = unique_name("hooks")
    server.heroku("apps:create", app)
    url = f"http://127.0.0.1:{receiver.port}/hooks"
    added = server.heroku(
        "webhooks:add", "-i", "api:release,api:formation", "-l", "sync", "-u", url, "-a", app
    )
    [secret] = section(added.stdout, "Webhooks Signing Secret")
    assert re.fullmatch(r"[0-9a-f]{60}", secret), added.stdout
    receiver.secret = secret

    listed = server.heroku("webhooks", "-a", app).stdout
    api = Api(server)
    [webhook] = api.get(f"/apps/{app}/webhooks")
    api.close()
    webhook_id = webhook["id"]
    assert webhook_id in listed, listed
    assert url in listed and "api:release,api:formation" in listed and "sync" in listed
    info = key_values(
        section(server.heroku("webhooks:info", webhook_id, "-a", app).stdout, webhook_id)
    )
    assert info["URL"] == url and info["Level"] == "sync" and info["Webhook ID"] == webhook_id
    assert secret not in listed + str(info)

    server.heroku("config:set", "A=1", "-a", app)  # v2
    wait_for(lambda: receiver.releases() == [2], timeout=30, what="v2 delivered")
    first = receiver.got[0]
    assert first["action"] == "create" and first["actor"]["email"] == server.email
    assert first["data"]["description"] == "Set A config vars"
    assert first["webhook_metadata"]["webhook"]["id"] == webhook_id

    # Down: the releases wait, retried with back-off, each attempt recorded.
    receiver.down()
    server.heroku("config:set", "B=2", "-a", app)  # v3
    server.heroku("config:set", "C=3", "-a", app)  # v4

    def retrying() -> list[list[str]] | None:
        rows = deliveries(server, app)
        return rows if len(rows) == 3 and "retrying" in rows[1] else None

    rows = wait_for(retrying, timeout=30, what="a failed attempt recorded")
    assert "ConnectionRefusedError" in rows[1], rows
    assert "pending" in rows[2], rows  # waits behind v3: in order

    # waka is killed while the receiver is down, and made to restart.
    server.heroku("config:set", "D=4", "-a", app)  # v5
    server.crash()
    server.start(same_ports=True)
    receiver.up()
    wait_for(lambda: receiver.releases() == [2, 3, 4, 5], timeout=60, what="v3..v5 delivered")

    # Nothing more, nothing twice: a new event arrives after all that.
    server.heroku("config:set", "E=5", "-a", app)  # v6
    wait_for(lambda: receiver.releases() == [2, 3, 4, 5, 6], timeout=30, what="v6 delivered")
    assert receiver.bad_signatures == 0
    rows = deliveries(server, app)
    assert len(rows) == 5 and all("succeeded" in row for row in rows), rows

    delivery_id = rows[1][0]
    shown = server.heroku("webhooks:deliveries:info", delivery_id, "-a", app).stdout
    details = key_values(section(shown, delivery_id))
    assert details["Status"] == "succeeded" and details["Include"] == "api:release"
    assert int(details["Attempts"]) >= 2 and details["Code"] == "200", shown
    assert '"version": 3' in shown and "Set B config vars" in shown  # the event payload
    events = server.heroku("webhooks:events", "-a", app)
    assert flat(events.stdout).count("release create") == 5, events.stdout

    # A new secret signs what follows; the level changes too (the CLI insists on -i and -u).
    server.heroku(
        "webhooks:update",
        webhook_id,
        "-i",
        "api:release",
        "-u",
        url,
        "-s",
        "a-new-secret",
        "-l",
        "notify",
        "-a",
        app,
    )
    receiver.secret = "a-new-secret"
    server.heroku("config:set", "F=6", "-a", app)  # v7
    wait_for(lambda: receiver.releases()[-1:] == [7], timeout=30, what="v7 delivered")
    assert receiver.bad_signatures == 0
    info = key_values(
        section(server.heroku("webhooks:info", webhook_id, "-a", app).stdout, webhook_id)
    )
    assert info["Level"] == "notify" and info["Include"] == "api:release"

    server.heroku("webhooks:remove", webhook_id, "-a", app)
    assert "has no webhooks" in server.heroku("webhooks", "-a", app).stdout
    server.heroku("config:set", "G=7", "-a", app)  # v8: nobody listens
    server.heroku("config:set", "H=8", "-a", app)
    assert len(deliveries(server, app)) == 6
    assert receiver.releases() == [2, 3, 4, 5, 6, 7]
    assert secret not in server.log() and "a-new-secret" not in server.log()
    audited = [line.action for line in server.audit("--app", app)]
    shown = f"http://127.0.0.1:{receiver.port}"
    assert f"Add webhook {shown} (api:release,api:formation, sync)" in audited, audited
    assert f"Update webhook {shown} (include, level, secret)" in audited, audited
    assert f"Remove webhook {shown}" in audited, audited
    assert "a-new-secret" not in str(audited)


def test_bad_webhooks_are_refused_with_herokus_message(server: WakaServer) -> None:
    app = unique_name("badhooks")
    server.heroku("apps:create", app)
    refused = server.heroku(
        "webhooks:add",
        "-i",
        "api:nothing",
        "-l",
        "sync",
        "-u",
        "http://x.example",
        "-a",
        app,
        check=False,
    )
    assert refused.returncode != 0 and "api:nothing" in flat(refused.stderr)
    refused = server.heroku(
        "webhooks:add",
        "-i",
        "dyno",
        "-l",
        "often",
        "-u",
        "http://x.example",
        "-a",
        app,
        check=False,
    )
    assert refused.returncode != 0 and "level must be notify or sync" in flat(refused.stderr)
    assert "has no webhooks" in server.heroku("webhooks", "-a", app).stdout


@pytest.mark.usefixtures("stack_image")
def test_a_push_and_a_scale_reach_the_receiver_as_build_release_formation_and_dyno_events(
    server: WakaServer, receiver: Receiver, tmp_path: Any
) -> None:
    app = unique_name("hookpush")
    server.heroku("apps:create", app)
    url = f"http://127.0.0.1:{receiver.port}/push"
    added = server.heroku(
        "webhooks:add",
        "-i",
        "api:build,api:release,api:formation,dyno",
        "-l",
        "sync",
        "-u",
        url,
        "-s",
        "push-secret",
        "-a",
        app,
    )
    assert section(added.stdout, "Webhooks Signing Secret") == ["push-secret"]
    receiver.secret = "push-secret"
    repo = app_repo("python-web", tmp_path / "app")
    pushed = repo.push(git_url(server, app))
    assert pushed.returncode == 0, pushed

    def seen() -> list[tuple[str, str, str]]:
        return [
            (e["resource"], e["action"], e["data"].get("status") or e["data"].get("state") or "")
            for e in list(receiver.got)
        ]

    wait_for(lambda: ("dyno", "update", "up") in seen(), timeout=120, what="web.1 up")
    events = seen()
    assert (
        events.index(("build", "create", "pending"))
        < events.index(("build", "update", "succeeded"))
        < events.index(("release", "create", "succeeded"))
    )
    assert events.index(("dyno", "create", "starting")) < events.index(("dyno", "update", "up"))

    server.heroku("ps:scale", "web=0", "-a", app)
    wait_for(lambda: ("dyno", "destroy", "down") in seen(), timeout=60, what="web.1 stopped")
    formations = [e["data"] for e in receiver.got if e["resource"] == "formation"]
    assert [(f["type"], f["quantity"]) for f in formations][-1] == ("web", 0), formations
    assert receiver.bad_signatures == 0
    rows = deliveries(server, app)
    assert {row[3] for row in rows} >= {"api:build", "api:release", "api:formation", "dyno"}, rows
