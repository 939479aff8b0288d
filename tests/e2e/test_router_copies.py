"""Two `waka router` processes on one host share one port (SO_REUSEPORT): both hold a listening
socket on it, the kernel spreads connections over them, and when one is killed (-9) the other
keeps answering on the same port. (Real proxying by several router processes, counted per
process, is tests/test_router_processes.py; a push served through a `waka router` is
test_roles.py.)"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .processes import listening_inodes, sockets_of
from .roles import Role

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def routers(tmp_path: Path, pg_schema_url: tuple[str, str]) -> Iterator[list[Role]]:
    url, schema = pg_schema_url
    first = Role(tmp_path / "home-router-1", "router", url, schema)
    second = Role(tmp_path / "home-router-2", "router", url, schema)
    second.port = first.port  # the same port: the point of the test
    try:
        for role in (first, second):
            role.start()
        yield [first, second]
    finally:
        for role in (first, second):
            role.stop()


def listening(role: Role) -> bool:
    assert role.process is not None
    return bool(sockets_of(role.process.pid) & listening_inodes(role.port))


def wait(predicate, what: str, roles: list[Role], timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        for role in roles:
            assert role.process is not None
            if role.process.poll() is not None:
                raise AssertionError(f"`waka router` exited. Its output:\n{role.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)


def no_such_app(port: int) -> bool:
    """A new connection to the port is answered by a router (404: no app of that name)."""
    answer = httpx.get(
        f"http://127.0.0.1:{port}/", headers={"Host": "no-such-app.localhost"}, timeout=5
    )
    return answer.status_code == 404 and "No such app" in answer.text


def test_two_router_processes_share_a_port_and_one_survives_the_other(
    routers: list[Role],
) -> None:
    first, second = routers
    wait(lambda: listening(first) and listening(second), "both listen on the port", routers)
    assert first.port == second.port
    for _ in range(20):
        assert no_such_app(first.port)

    assert first.process is not None
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    for _ in range(20):  # every new connection now goes to the survivor
        assert no_such_app(second.port)
    assert second.process is not None and second.process.poll() is None
