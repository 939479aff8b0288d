"""One router process for tests that need several: `python tests/router_process.py PORT
BACKEND_PORT LOG_FILE`. It routes `myapp.localhost` to the backend, listens on PORT with
SO_REUSEPORT (as `waka router` copies do), appends its router log lines to LOG_FILE (so a
test can tell which process served what), and prints "listening" once bound."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from waka.router import Backend, Route, Router, RouteTable
from waka.router.eventloop import run


async def main(port: int, backend_port: int, log_file: str) -> None:
    table = RouteTable()
    table.set_app(Route("app-1", "myapp", backends=(Backend("127.0.0.1", backend_port, "web.1"),)))
    out = open(log_file, "a", buffering=1)  # noqa: SIM115 (open for the process's life)

    def log(app_id: str, text: str) -> None:
        out.write(text + "\n")

    router = Router(table, log=log)
    await router.start("127.0.0.1", port, reuse_port=True)
    print("listening", flush=True)
    try:
        await asyncio.Future()  # until killed
    finally:
        await router.close()


if __name__ == "__main__":
    run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
