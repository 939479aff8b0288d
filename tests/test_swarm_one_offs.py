"""The relay of attached Swarm one-offs and the listener it calls back, on this host: the relay
is run by python3 as the dyno's service runs it, against a real CallbackListener."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from waka.adapters.swarm_one_offs import GO, RELAY, RELAY_ENV, TOKEN_ENV, CallbackListener


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
