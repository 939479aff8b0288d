"""Dynos reach the host's services (add-on servers) at the address `waka up` prints, also on
a Docker engine started for the first time, whose bridge network reports no gateway."""

from __future__ import annotations

import re
import socket
import subprocess
import threading

import pytest

from waka.adapters.runtime import bridge_gateway, docker_client

from .conftest import STACK_IMAGE, WakaServer

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


def test_waka_up_prints_the_address_and_a_container_reaches_the_host_there(
    server: WakaServer,
) -> None:
    printed = re.search(r"dynos reach this host's services at (\S+)", server.log())
    assert printed, server.log()
    address = printed.group(1)
    assert address == bridge_gateway(docker_client())
    assert not address.startswith("127."), "a dyno's 127.0.0.1 is the dyno itself"

    # A service listening on the host, as an add-on's server does; a container connects.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        accepted: list[bytes] = []

        def serve() -> None:
            listener.settimeout(60)
            conn, _ = listener.accept()
            with conn:
                accepted.append(conn.recv(100))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        probe = (
            f"import socket; s = socket.create_connection(({address!r}, {port}), timeout=20); "
            "s.sendall(b'hello from a dyno')"
        )
        done = subprocess.run(
            ["docker", "run", "--rm", STACK_IMAGE, "python3", "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        thread.join(timeout=30)
    assert accepted == [b"hello from a dyno"]
