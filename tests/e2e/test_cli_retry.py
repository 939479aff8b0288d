"""The real Heroku CLI sends a request again when its connection breaks before the answer
(@heroku/http-call retries on ECONNRESET, with the same Request-Id). An API process killed
after saving a change and before answering does just that to it, as the fault suite found:
`heroku config:set` then made two releases. Here a proxy between the CLI and `waka up` lets
the first PATCH of the config vars through, waits for waka's answer, and resets the CLI's
connection instead of passing it on; the CLI sends the PATCH again through the proxy, and
waka sees its Request-Id again: one change, one release, and the CLI says it is done."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from .conftest import WakaServer, unique_name

pytestmark = [pytest.mark.e2e]


class CuttingProxy:
    """Forwards TCP to the API; the first connection that carries a config-vars PATCH is
    reset once the API has answered it, its answer dropped."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.patches: list[bytes] = []  # the PATCH heads seen, in order
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
                if data.startswith(b"PATCH ") and b"/config-vars" in data.split(b"\r\n", 1)[0]:
                    self.patches.append(data.split(b"\r\n\r\n", 1)[0])
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
def proxy(server: WakaServer) -> Iterator[CuttingProxy]:
    made = CuttingProxy(server.port)
    yield made
    made.close()


def request_id(head: bytes) -> str:
    found = re.search(rb"(?im)^request-id:\s*([^\r\n,]+)", head)
    assert found, head
    return found[1].decode()


def test_config_set_sent_again_by_the_cli_is_one_release(
    server: WakaServer, proxy: CuttingProxy
) -> None:
    app = unique_name("retried")
    server.heroku("apps:create", app)
    url = f"http://localhost:{proxy.port}"
    done = server.heroku(
        "config:set",
        "RETRIED=1",
        "-a",
        app,
        env={"HEROKU_HOST": url, "HEROKU_PARTICLEBOARD_URL": url},
    )
    assert "RETRIED" in done.stdout + done.stderr, done
    # The CLI sent it twice, as the same request.
    assert len(proxy.patches) == 2, proxy.patches
    assert request_id(proxy.patches[0]) == request_id(proxy.patches[1])
    described = [
        line
        for line in server.heroku("releases", "-a", app).stdout.splitlines()
        if "RETRIED" in line
    ]
    assert len(described) == 1, described
    assert server.heroku("config:get", "RETRIED", "-a", app).stdout.strip() == "1"
    server.heroku("apps:destroy", app, "--confirm", app)
