"""Build output on the embedded platform (one file per build): the git hook follows it while
the build runs. The ledger says "done" before the builder writes its last lines ("Released
v2"), so a follower reads on until the writer's end mark, or until a log whose writer died
stops growing."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from waka.adapters import build_logs
from waka.adapters.build_logs import BuildLogs


def test_the_last_lines_written_after_done_are_followed(tmp_path: Path) -> None:
    logs = BuildLogs(tmp_path)
    build_id = str(uuid.uuid4())
    output = logs.open(build_id)
    output.step("Building")
    followed: list[bytes] = []
    finished = False

    def follow() -> None:
        followed.extend(logs.follow(build_id, lambda: finished, poll=0.05))

    reader = threading.Thread(target=follow)
    reader.start()
    output.detail("compiled")
    finished = True  # the ledger says so before the builder writes its last lines
    time.sleep(0.5)
    output.step("Launching...")
    output.detail("Released v2")
    output.close()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert b"".join(followed).decode().splitlines() == [
        "-----> Building",
        "       compiled",
        "-----> Launching...",
        "       Released v2",
    ]
    # A replay of the finished build reads it all at once.
    began = time.monotonic()
    replay = b"".join(logs.follow(build_id, lambda: True)).decode().splitlines()
    assert replay[-1] == "       Released v2" and time.monotonic() - began < 1
    # Run again after a crash, the build appends: its follower waits for the new end.
    again = logs.open(build_id)
    again.step("Building again")
    followed.clear()
    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.3)
    again.detail("Released v3")
    again.close()
    reader.join(timeout=10)
    assert b"".join(followed).decode().splitlines()[-1] == "       Released v3"


def test_a_log_whose_writer_died_ends_once_it_stops_growing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_logs, "END_GRACE", 0.5)
    logs = BuildLogs(tmp_path)
    build_id = str(uuid.uuid4())
    output = logs.open(build_id)
    output.step("Building")  # and then the writer is killed: never closed
    began = time.monotonic()
    lines = b"".join(logs.follow(build_id, lambda: True, poll=0.05)).decode().splitlines()
    assert lines == ["-----> Building"]
    assert 0.3 < time.monotonic() - began < 5
