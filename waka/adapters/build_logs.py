"""Build output: one append-only file per build. The builder writes it; the git hook and
`output_stream_url` follow it while the build runs and replay it afterwards."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

BUILD_ID = re.compile(r"^[0-9a-f-]{36}$")


class BuildLogs:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, build_id: str) -> Path:
        if not BUILD_ID.fullmatch(build_id):
            raise ValueError(f"Invalid build id {build_id!r}.")
        return self.root / f"{build_id}.log"

    def open(self, build_id: str) -> BuildLog:
        return BuildLog(self.path(build_id).open("ab", buffering=0))

    def follow(
        self,
        build_id: str,
        is_done: Callable[[], bool],
        poll: float = 0.2,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        """Yield the log as it grows, until the build is done and everything is read."""
        path = self.path(build_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        position = 0
        while True:
            done = is_done()  # asked before reading, so no line written before "done" is lost
            if path.exists():
                with path.open("rb") as log:
                    log.seek(position)
                    while chunk := log.read(1 << 16):
                        position += len(chunk)
                        yield chunk
            if done or (deadline is not None and time.monotonic() > deadline):
                return
            time.sleep(poll)


class BuildLog:
    """A writer that keeps whole lines, Heroku style: `-----> step` and indented output."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def step(self, text: str) -> None:
        self.line(f"-----> {text}")

    def detail(self, text: str) -> None:
        self.line(f"       {text}")

    def error(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.line(f" !     {line}")

    def line(self, text: str) -> None:
        self.write((text.rstrip("\n") + "\n").encode())

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def close(self) -> None:
        self.out.close()
