"""The event loop to run the router on: uvloop when installed, else asyncio's own.

On uvloop (libuv, in C) the router spends about a fifth less CPU per request, so it serves
about a fifth more requests per second (bench/router_throughput.py). Everything else in the
process (hypercorn, threads through asyncio.to_thread, signal handlers) runs on it unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def name() -> str:
    """Which loop run() uses ("uvloop" or "asyncio"), for a startup message."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
