"""The real Heroku CLI sends a request again when its connection breaks before the answer
(@heroku/http-call retries on ECONNRESET, with the same Request-Id). An API process killed
after saving a change and before answering does just that to it, as the fault suite found:
`heroku config:set` then made two releases. Here a proxy between the CLI and `waka up` lets
the first request of one kind through (a PATCH of the config vars, a POST making an app, an
add-on, a domain, a drain, an attachment or a webhook), waits for waka's answer, and resets
the CLI's connection instead of passing it on; the CLI sends the request again through the
proxy, and waka sees its Request-Id again: one change, one release, one of each thing, and
the CLI says it is done, not that what it asked for once was "already added" (nor, for a
removal, that it is not found)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from .conftest import WakaServer, unique_name, wait_for

pytestmark = [pytest.mark.e2e]


class CuttingProxy:
    """Forwards TCP to the API; the first connection that carries a request of the kind
    given (its method, and a pattern its path matches) is reset once the API has answered
    it, its answer dropped."""

    def __init__(self, upstream_port: int, method: bytes, path: bytes) -> None:
        self.upstream_port = upstream_port
        self.kind = re.compile(rb"%s %s(?:\?| )" % (method, path))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen: list[bytes] = []  # the heads of that kind seen, in order
        self.cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        cutting, reset = threading.Event(), threading.Event()

        def answers() -> None:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    if cutting.is_set():
                        # Answered: the change is saved. The client never hears it: the reader
                        # below, woken, resets its connection.
                        reset.set()
                        client.shutdown(socket.SHUT_RD)
                        upstream.close()
                        return
                    client.sendall(data)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=answers, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.kind.match(data):
                    self.seen.append(data.split(b"\r\n\r\n", 1)[0])
                    if not self.cut:
                        self.cut = True
                        cutting.set()
                upstream.sendall(data)
        if reset.is_set():  # closed with no linger: a reset, as a dying server's kernel sends
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def cutting(server: WakaServer) -> Iterator[Callable[[bytes, bytes], CuttingProxy]]:
    made: list[CuttingProxy] = []

    def make(method: bytes, path: bytes) -> CuttingProxy:
        made.append(CuttingProxy(server.port, method, path))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def through(proxy: CuttingProxy) -> dict[str, str]:
    url = f"http://localhost:{proxy.port}"
    return {"HEROKU_HOST": url, "HEROKU_PARTICLEBOARD_URL": url}


def sent_twice_as_one_request(proxy: CuttingProxy) -> None:
    assert len(proxy.seen) == 2, proxy.seen
    assert request_id(proxy.seen[0]) == request_id(proxy.seen[1])


def request_id(head: bytes) -> str:
    found = re.search(rb"(?im)^request-id:\s*([^\r\n,]+)", head)
    assert found, head
    return found[1].decode()


def test_config_set_sent_again_by_the_cli_is_one_release(server: WakaServer, cutting) -> None:
    app = unique_name("retried")
    server.heroku("apps:create", app)
    proxy = cutting(b"PATCH", rb"/apps/[^/ ]+/config-vars")
    done = server.heroku("config:set", "RETRIED=1", "-a", app, env=through(proxy))
    assert "RETRIED" in done.stdout + done.stderr, done
    sent_twice_as_one_request(proxy)
    described = [
        line
        for line in server.heroku("releases", "-a", app).stdout.splitlines()
        if "RETRIED" in line
    ]
    assert len(described) == 1, described
    assert server.heroku("config:get", "RETRIED", "-a", app).stdout.strip() == "1"
    server.heroku("apps:destroy", app, "--confirm", app)


def names(listed: str) -> set[str]:
    return {a["name"] for a in json.loads(listed)}


def test_apps_create_sent_again_by_the_cli_is_one_app(server: WakaServer, cutting) -> None:
    """Without a name waka picks one: a retry taken for a new request made a second app."""
    before = names(server.heroku("apps", "--json").stdout)
    proxy = cutting(b"POST", rb"/apps")
    done = server.heroku("apps:create", env=through(proxy))
    sent_twice_as_one_request(proxy)
    made = names(server.heroku("apps", "--json").stdout) - before
    assert len(made) == 1, made
    (app,) = made
    assert app in done.stdout + done.stderr, done
    server.heroku("apps:destroy", app, "--confirm", app)


def test_addons_create_sent_again_by_the_cli_is_one_addon(server: WakaServer, cutting) -> None:
    app = unique_name("retried")
    server.heroku("apps:create", app)
    proxy = cutting(b"POST", rb"/apps/[^/ ]+/addons")
    done = server.heroku("addons:create", "heroku-redis", "-a", app, env=through(proxy))
    sent_twice_as_one_request(proxy)
    addons = json.loads(server.heroku("addons", "-a", app, "--json").stdout)
    assert [a["addon_service"]["name"] for a in addons] == ["heroku-redis"], addons
    assert addons[0]["name"] in done.stdout + done.stderr, done
    releases = server.heroku("releases", "-a", app).stdout
    assert len([line for line in releases.splitlines() if "Attach" in line]) == 1, releases
    server.heroku("apps:destroy", app, "--confirm", app)


def test_domains_and_drains_added_and_sent_again(server: WakaServer, cutting) -> None:
    app = unique_name("retried")
    server.heroku("apps:create", app)
    proxy = cutting(b"POST", rb"/apps/[^/ ]+/domains")
    done = server.heroku("domains:add", f"www.{app}.example.com", "-a", app, env=through(proxy))
    sent_twice_as_one_request(proxy)
    assert f"www.{app}.example.com" in done.stdout + done.stderr, done
    listed = json.loads(server.heroku("domains", "-a", app, "--json").stdout)
    assert [d["hostname"] for d in listed if d["kind"] == "custom"] == [f"www.{app}.example.com"], (
        listed
    )

    proxy = cutting(b"POST", rb"/apps/[^/ ]+/log-drains")
    url = "https://logs.example.com/retried"
    done = server.heroku("drains:add", url, "-a", app, env=through(proxy))
    sent_twice_as_one_request(proxy)
    assert url in done.stdout + done.stderr, done
    drains = json.loads(server.heroku("drains", "-a", app, "--json").stdout)
    assert [d["url"] for d in drains] == [url], drains
    server.heroku("apps:destroy", app, "--confirm", app)


def test_addons_attach_sent_again_is_one_attachment(server: WakaServer, cutting) -> None:
    """Without --as, the attach sent again took a colour name: a second attachment and a
    second release."""
    app, other = unique_name("retried"), unique_name("other")
    server.heroku("apps:create", app)
    server.heroku("apps:create", other)
    server.heroku("addons:create", "heroku-redis", "-a", app)

    def provisioned() -> dict | None:
        (addon,) = json.loads(server.heroku("addons", "-a", app, "--json").stdout)
        return addon if addon["state"] == "provisioned" else None

    addon = wait_for(provisioned, what="the add-on provisioned")
    proxy = cutting(b"POST", rb"/addon-attachments")
    done = server.heroku("addons:attach", addon["name"], "-a", other, env=through(proxy))
    sent_twice_as_one_request(proxy)
    assert "REDIS" in done.stdout + done.stderr, done
    listed = json.loads(server.heroku("addons", "-a", other, "--json").stdout)
    names = [a["name"] for item in listed for a in item["attachments"] if a["app"]["name"] == other]
    assert names == ["REDIS"], listed
    releases = server.heroku("releases", "-a", other).stdout
    assert len([line for line in releases.splitlines() if "Attach" in line]) == 1, releases
    server.heroku("apps:destroy", other, "--confirm", other)
    server.heroku("apps:destroy", app, "--confirm", app)


def test_webhooks_add_sent_again_is_one_webhook(server: WakaServer, cutting) -> None:
    app = unique_name("retried")
    server.heroku("apps:create", app)
    proxy = cutting(b"POST", rb"/apps/[^/ ]+/webhooks")
    url = "https://hooks.example.com/retried"
    done = server.heroku(
        "webhooks:add", "-i", "api:release", "-l", "notify", "-u", url, "-a", app,
        env=through(proxy),
    )  # fmt: skip
    sent_twice_as_one_request(proxy)
    assert "Webhooks Signing Secret" in done.stdout, done  # not an error: it was added
    assert re.search(r"(?m)^[0-9a-f]{60}$", done.stdout), done
    listed = server.heroku("webhooks", "-a", app).stdout
    assert listed.count(url) == 1, listed
    server.heroku("apps:destroy", app, "--confirm", app)


def test_removals_sent_again_say_done(server: WakaServer, cutting) -> None:
    """The removal made, its answer lost, the retry found the thing gone: the CLI said
    "Couldn't find that ..." (or that the add-on "was unable to be destroyed") and failed,
    for a removal that had worked."""
    app = unique_name("retried")
    server.heroku("apps:create", app)
    host, url = f"www.{app}.example.com", "https://logs.example.com/removed"
    server.heroku("domains:add", host, "-a", app)
    server.heroku("drains:add", url, "-a", app)

    proxy = cutting(b"DELETE", rb"/apps/[^/ ]+/domains/[^/ ]+")
    server.heroku("domains:remove", host, "-a", app, env=through(proxy))  # fails if not 2xx
    sent_twice_as_one_request(proxy)
    listed = json.loads(server.heroku("domains", "-a", app, "--json").stdout)
    assert [d["kind"] for d in listed] == ["heroku"], listed

    proxy = cutting(b"DELETE", rb"/apps/[^/ ]+/log-drains/[^ ]+")
    done = server.heroku("drains:remove", url, "-a", app, env=through(proxy))
    sent_twice_as_one_request(proxy)
    assert url in done.stdout + done.stderr, done  # "Successfully removed drain <url>"
    assert json.loads(server.heroku("drains", "-a", app, "--json").stdout) == []

    server.heroku("addons:create", "heroku-redis", "-a", app)
    (addon,) = json.loads(server.heroku("addons", "-a", app, "--json").stdout)
    proxy = cutting(b"DELETE", rb"/apps/[^/ ]+/addons/[^/ ]+")
    name = addon["name"]
    done = server.heroku("addons:destroy", name, "-a", app, "--confirm", app, env=through(proxy))
    sent_twice_as_one_request(proxy)
    assert name in done.stdout + done.stderr, done
    assert json.loads(server.heroku("addons", "-a", app, "--json").stdout) == []

    proxy = cutting(b"DELETE", rb"/apps/[^/ ]+")
    server.heroku("apps:destroy", app, "--confirm", app, env=through(proxy))
    sent_twice_as_one_request(proxy)
    assert app not in names(server.heroku("apps", "--json").stdout)
