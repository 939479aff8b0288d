"""The relay of attached Swarm one-offs and the listener it calls back, on this host: the relay
is run by python3 as the dyno's service runs it, against a real CallbackListener."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from waka.adapters import swarm_one_offs
from waka.adapters.one_off import OneOffSpec
from waka.adapters.swarm_one_offs import (
    GO,
    RELAY,
    RELAY_ENV,
    TOKEN_ENV,
    CallbackListener,
    SwarmOneOff,
)


@pytest.fixture
def listener():
    found = CallbackListener("127.0.0.1")
    yield found
    found.close()


def relay(listener: CallbackListener, token: str, mode: str, script: str, **env: str):
    return subprocess.Popen(
        [sys.executable, "-c", RELAY, mode, "bash", "-c", script],
        env={**os.environ, RELAY_ENV: listener.address, TOKEN_ENV: token, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def attached(listener: CallbackListener, token_arrival, timeout: float = 10) -> socket.socket:
    _, arrival = token_arrival
    assert arrival.event.wait(timeout), "the relay did not call back"
    sock = arrival.sock
    sock.sendall(GO)
    return sock


def test_without_a_tty_the_connection_is_the_process_s_stdio(listener: CallbackListener) -> None:
    expected = listener.expect()
    process = relay(
        listener,
        expected[0],
        "pipe",
        'read x; echo "got $x"; env | grep -c WAKA_RELAY; exit 3',
    )
    sock = attached(listener, expected)
    sock.sendall(b"hello\n")
    sock.shutdown(socket.SHUT_WR)  # the end of the user's input
    assert read_all(sock).decode().splitlines() == ["got hello", "0"]  # no token in its env
    assert process.wait(10) == 3


def test_the_end_of_input_reaches_the_process(listener: CallbackListener) -> None:
    expected = listener.expect()
    process = relay(listener, expected[0], "pipe", "cat; echo end")
    sock = attached(listener, expected)
    sock.sendall(b"one\ntwo\n")
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock) == b"one\ntwo\nend\n"
    assert process.wait(10) == 0


def test_with_a_tty_the_process_has_a_terminal_of_the_user_s_size(
    listener: CallbackListener,
) -> None:
    expected = listener.expect()
    process = relay(
        listener,
        expected[0],
        "tty",
        "read x; stty size; tty -s && echo tty:$x; exit 4",
        LINES="30",
        COLUMNS="100",
    )
    sock = attached(listener, expected)
    sock.sendall(b"typed\r")
    out = read_all(sock).decode()
    assert "30 100" in out and "tty:typed" in out, out
    assert process.wait(10) == 4


def test_a_tty_process_ends_when_its_user_goes(listener: CallbackListener) -> None:
    expected = listener.expect()
    process = relay(listener, expected[0], "tty", "echo started; sleep 300")
    sock = attached(listener, expected)
    assert b"started" in sock.recv(1024)
    sock.close()
    assert process.wait(10) == 128 + 1  # SIGHUP, as a terminal hanging up


def test_a_wrong_token_is_turned_away(listener: CallbackListener) -> None:
    token, arrival = listener.expect()
    process = relay(listener, "not-" + token, "pipe", "echo ran")
    assert process.wait(15) == 1  # waka closed on it; the command never ran
    assert b"ran" not in process.stdout.read()
    assert not arrival.event.is_set()
    # The right token still works, once.
    process = relay(listener, token, "pipe", "echo ran")
    sock = attached(listener, (token, arrival))
    assert read_all(sock) == b"ran\n"
    assert process.wait(10) == 0


class FakeSwarm:
    """What a SwarmOneOff asks of its owner: its task's state, and stopping or removing it."""

    def __init__(self, states: list[tuple[str, str]]) -> None:
        self.states = states
        self.callback_address = "10.0.0.1:4242"
        self.removed: list[str] = []
        self.lines: list[str] = []
        self.dynos = self

    def task_state(self, service_id: str) -> tuple[str, str]:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def log_line(self, app_id: str, source: str, dyno: str, message: str) -> None:
        self.lines.append(f"{source}[{dyno}]: {message}")

    def stop(self, service_id: str, timeout: int = 10) -> int | None:
        self.removed.append(service_id)
        return 137

    def remove(self, service_id: str) -> None:
        self.removed.append(service_id)


def one_off(swarm: FakeSwarm, listener: CallbackListener) -> tuple[SwarmOneOff, str]:
    from pathlib import Path

    spec = OneOffSpec(
        app_id="a",
        app_name="app",
        name="run.1234",
        command="bash",
        env={},
        memory_mb=512,
        size="Standard-1X",
        release=1,
        slug_path=Path(),
        attach=True,
        tty=False,
    )
    token, arrival = listener.expect()
    return SwarmOneOff(swarm, "svc", spec, arrival), token  # type: ignore[arg-type]


def test_a_one_off_whose_task_fails_says_why(listener: CallbackListener) -> None:
    swarm = FakeSwarm([("pending", ""), ("rejected", "No such image: registry/waka/slug:x")])
    dyno, token = one_off(swarm, listener)
    with pytest.raises(
        RuntimeError,
        match=r"run\.1234 ended before it could start "
        r"\(rejected: No such image",
    ):
        dyno.attach()
    dyno.discard()
    assert swarm.removed == ["svc"]
    # Its token is good no more: a late relay is turned away.
    process = relay(listener, token, "pipe", "echo ran")
    assert process.wait(15) == 1


def test_a_one_off_that_never_calls_back_times_out_clearly(
    listener: CallbackListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(swarm_one_offs, "CONNECT_TIMEOUT", 1.5)
    swarm = FakeSwarm([("pending", "no suitable node (insufficient resources on 3 nodes)")])
    dyno, _ = one_off(swarm, listener)
    with pytest.raises(RuntimeError) as raised:
        dyno.attach()
    message = str(raised.value)
    assert "did not call back within 2 s" in message, message
    assert "pending: no suitable node" in message and "10.0.0.1:4242" in message, message


def test_killed_once_with_its_status_logged(listener: CallbackListener) -> None:
    swarm = FakeSwarm([("running", "")])
    dyno, _ = one_off(swarm, listener)
    dyno.kill()
    assert dyno.finish() == 137
    dyno.kill()
    assert swarm.removed == ["svc"]
    assert swarm.lines == [
        "heroku[run.1234]: Stopping process with SIGKILL",
        "heroku[run.1234]: Process exited with status 137",
        "heroku[run.1234]: State changed from up to complete",
    ]
