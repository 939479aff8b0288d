"""Source blobs: tarballs uploaded to waka itself (`POST /sources` gives a put/get URL pair) or
exported from a git push, kept while a pending build needs them and for an hour at least (as
Heroku's source URLs are good for an hour), then collected by the builder (`collect`).

They are blobs (waka/adapters/blobs.py): files under `$WAKA_HOME/sources` on the embedded
platform, PostgreSQL where processes share it, so a source uploaded to one API process is
fetched by a builder in another process, on another host.

A blob's token is a 256-bit random string: knowing the URL is the permission to read or
write it, as with Heroku's signed source URLs.
"""

from __future__ import annotations

import re
import secrets
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from waka.adapters.blobs import BlobNotFound, BlobStore, BlobWriter, LocalBlobStore, get_file
from waka.redaction import redact_url

TOKEN = re.compile(r"^[A-Za-z0-9_-]{40,64}$")
DEFAULT_LIMIT = 1024 * 1024 * 1024  # 1 GiB of compressed source
TTL = 3600.0  # seconds a source is kept when no pending build needs it


class SourceError(Exception):
    """The source could not be stored or fetched; the message says why."""


class SourceTooLarge(SourceError):
    pass


class Upload:
    def __init__(self, out: BlobWriter, limit_bytes: int) -> None:
        self.out = out
        self.limit_bytes = limit_bytes
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit_bytes:
            raise SourceTooLarge(f"Source blob is over {self.limit_bytes} bytes.")
        self.out.write(chunk)


class SourceStore:
    def __init__(
        self, blobs: BlobStore | Path, prefix: str = "", limit_bytes: int = DEFAULT_LIMIT
    ) -> None:
        """`blobs`: the blob store (a directory: files there); `prefix`: the sources' part of
        a store shared with slugs and the rest (e.g. "sources/")."""
        self.blobs = LocalBlobStore(blobs) if isinstance(blobs, Path) else blobs
        self.prefix = prefix
        self.limit_bytes = limit_bytes

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)

    def key(self, token: str) -> str:
        if not TOKEN.fullmatch(token):
            raise SourceError("Invalid source blob token.")
        return f"{self.prefix}{token}.tgz"

    def exists(self, token: str) -> bool:
        return self.blobs.stat(self.key(token)) is not None

    @contextmanager
    def upload(self, token: str) -> Iterator[Upload]:
        """Write a blob: it appears whole when the block ends, or not at all."""
        with self.blobs.upload(self.key(token)) as out:
            yield Upload(out, self.limit_bytes)

    def chunks(self, token: str) -> Iterator[bytes]:
        """The blob's content, chunk by chunk (a generator: the store is read as it is
        iterated, and released when it ends or is closed)."""
        with self.blobs.read(self.key(token)) as chunks:
            yield from chunks

    def token_of(self, url: str) -> str | None:
        """The token of a URL of one of ours (`.../sources/<token>`), else None."""
        match = re.fullmatch(r"/sources/([A-Za-z0-9_-]+)", urlparse(url).path)
        return match[1] if match and TOKEN.fullmatch(match[1]) else None

    def collect(self, needed: set[str], ttl: float = TTL) -> list[str]:
        """Delete the sources older than `ttl` seconds but those whose tokens are `needed`
        (by pending builds); -> the tokens deleted. Idempotent: several workers may run it."""
        deleted = []
        for key in self.blobs.older_than(self.prefix, ttl):
            token = key[len(self.prefix) :].removesuffix(".tgz")
            if token not in needed and self.blobs.delete(key):
                deleted.append(token)
        return deleted

    def fetch(self, url: str, dest: Path) -> None:
        """Copy the blob at `url` to `dest`: ours from the blob store, others over HTTP(S)."""
        parsed = urlparse(url)
        token = self.token_of(url)
        if token is not None:
            try:
                get_file(self.blobs, self.key(token), dest)
                return
            except BlobNotFound:
                pass  # not one of ours after all (or collected): ask whoever serves the URL
        if parsed.scheme not in ("http", "https"):
            scheme = repr(parsed.scheme) if parsed.scheme else "a URL without a scheme"
            raise SourceError(f"Source URL must be http or https, not {scheme}.")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
                size = 0
                while chunk := response.read(1 << 16):
                    size += len(chunk)
                    if size > self.limit_bytes:
                        raise SourceTooLarge(f"Source blob is over {self.limit_bytes} bytes.")
                    out.write(chunk)
        except OSError as error:
            # Only scheme, host and port: a signed URL's path and query are its credentials.
            where = redact_url(url)
            raise SourceError(f"Could not download the source from {where}: {error}") from None
