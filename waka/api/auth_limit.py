"""Failed authentication, rate-limited per client address: API keys and git passwords alike.

Each address has a bucket of `failures_per_minute` tries that refills at that rate: a burst of
typos costs nothing, a guesser gets that many guesses a minute instead of a thousand a second.
While an address's bucket is empty, every attempt from it is answered 429 with Retry-After in
Heroku's shape (id "rate_limit") before its key is even looked at, so that a right guess can
not be told from a wrong one meanwhile.

Only failures count. A success neither counts nor clears the bucket: otherwise a guesser with
an account of its own could interleave its own key with its guesses and never be limited.
So a user whose typos emptied the bucket waits at most 60 / failures_per_minute seconds for
the next try (3 s with the default of 20), never the whole minute.

Addresses are the TCP peer's (no X-Forwarded-For: the API faces clients directly); IPv6
clients are counted per /64, the block one host usually has to itself.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from waka.api.errors import ApiError

log = logging.getLogger("waka.api")

FAILURES_PER_MINUTE = 20  # WAKA_AUTH_FAILURES_PER_MINUTE; 0 turns the limit off
MAX_ADDRESSES = 100_000  # buckets kept at most: full ones are dropped first


class RateLimited(ApiError):
    """429 with the seconds to wait, sent as Retry-After."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429,
            "rate_limit",
            "Too many failed authentication attempts from your address. "
            f"Please wait {retry_after} seconds before trying again.",
        )
        self.retry_after = retry_after


class AuthLimiter:
    """Token buckets of failed authentications, one per client address. Thread-safe: API
    handlers authenticate on a thread pool."""

    def __init__(
        self,
        failures_per_minute: int = FAILURES_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.capacity = float(failures_per_minute)
        self.rate = failures_per_minute / 60.0  # tokens back per second
        self._clock = clock
        self._max = max_addresses
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, as of when)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthLimiter:
        env = os.environ if env is None else env
        value = env.get("WAKA_AUTH_FAILURES_PER_MINUTE") or str(FAILURES_PER_MINUTE)
        try:
            per_minute = int(value)
        except ValueError:  # the API still answers; the operator's log says why
            log.warning(
                "WAKA_AUTH_FAILURES_PER_MINUTE=%r is not a whole number: using %d",
                value,
                FAILURES_PER_MINUTE,
            )
            per_minute = FAILURES_PER_MINUTE
        return cls(max(per_minute, 0))

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def check(self, address: str) -> None:
        """Raise RateLimited while `address` has no tries left."""
        if not self.enabled:
            return
        key = _key(address)
        with self._lock:
            tokens = self._tokens(key, self._clock())
        if tokens < 1:
            raise RateLimited(max(1, math.ceil((1 - tokens) / self.rate)))

    def failed(self, address: str) -> None:
        """Count one failed authentication from `address`."""
        if not self.enabled:
            return
        key = _key(address)
        with self._lock:
            now = self._clock()
            tokens = self._tokens(key, now)
            if key not in self._buckets and len(self._buckets) >= self._max:
                self._prune(now)
            self._buckets[key] = (max(tokens - 1, 0.0), now)

    def _tokens(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.capacity
        tokens, then = bucket
        return min(self.capacity, tokens + (now - then) * self.rate)

    def _prune(self, now: float) -> None:
        """Forget addresses whose bucket is full again; if too many are left, the half with
        the most tries left: the blocked ones are the last to be forgotten."""
        tokens = {k: self._tokens(k, now) for k in self._buckets}
        for k, left in tokens.items():
            if left >= self.capacity:
                del self._buckets[k]
        if len(self._buckets) >= self._max:
            fullest = sorted(self._buckets, key=tokens.__getitem__, reverse=True)
            for k in fullest[: len(fullest) // 2 + 1]:
                del self._buckets[k]


def _key(address: str) -> str:
    """IPv4 addresses as they are; IPv6 ones by their /64 (IPv4-mapped ones as IPv4)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a test client, a Unix socket): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


_made = threading.Lock()


def limiter_of(platform: Any) -> AuthLimiter:
    """The platform's limiter, made on first use from WAKA_AUTH_FAILURES_PER_MINUTE. Kept on
    the platform object so that each platform (and each test's) counts on its own."""
    limiter = platform.__dict__.get("auth_limiter")
    if limiter is None:
        with _made:
            limiter = platform.__dict__.setdefault("auth_limiter", AuthLimiter.from_env())
    return limiter
