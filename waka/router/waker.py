"""Waking sleeping apps: every request to an asleep app waits on the one wake in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from waka.router.logline import H10, H20, Code

logger = logging.getLogger(__name__)


class Waker:
    def __init__(self, wake: Callable[[str], Awaitable[None]], timeout: float) -> None:
        self._wake = wake
        self.timeout = timeout
        self._waking: dict[str, asyncio.Future[None]] = {}  # app_id -> the wake in flight

    async def wake(self, app_id: str) -> Code | None:
        """None once the app is awake, else the error to answer with: H20 when it takes longer
        than the timeout (Heroku's "App boot timeout"), H10 when waking it failed."""
        wake = self._waking.get(app_id)
        if wake is None:
            wake = self._waking[app_id] = asyncio.ensure_future(self._wake(app_id))
            wake.add_done_callback(lambda done: self._done(app_id, done))
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(wake)  # a request giving up must not cancel the others' wake
        except TimeoutError:
            return H20
        except Exception:
            return H10
        return None

    def _done(self, app_id: str, wake: asyncio.Future[None]) -> None:
        if self._waking.get(app_id) is wake:
            del self._waking[app_id]
        if not wake.cancelled() and wake.exception() is not None:
            logger.warning("waking app %s failed", app_id, exc_info=wake.exception())

    def cancel(self) -> None:
        for wake in list(self._waking.values()):
            wake.cancel()
