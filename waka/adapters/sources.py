"""Source blobs: tarballs uploaded to waka itself (`POST /sources` gives a put/get URL pair) or
exported from a git push, kept until their build has read them.

A blob's token is a 256-bit random string: knowing the URL is the permission to read or
write it, as with Heroku's signed source URLs.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from waka.redaction import redact_url

TOKEN = re.compile(r"^[A-Za-z0-9_-]{40,64}$")
DEFAULT_LIMIT = 1024 * 1024 * 1024  # 1 GiB of compressed source


class SourceError(Exception):
    """The source could not be stored or fetched; the message says why."""


class SourceTooLarge(SourceError):
    pass


class Upload:
    def __init__(self, out: BinaryIO, limit_bytes: int) -> None:
        self.out = out
        self.limit_bytes = limit_bytes
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit_bytes:
            raise SourceTooLarge(f"Source blob is over {self.limit_bytes} bytes.")
        self.out.write(chunk)


class SourceStore:
    def __init__(self, root: Path, limit_bytes: int = DEFAULT_LIMIT) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)

    def path(self, token: str) -> Path:
        if not TOKEN.fullmatch(token):
            raise SourceError("Invalid source blob token.")
        return self.root / f"{token}.tgz"

    def exists(self, token: str) -> bool:
        return self.path(token).is_file()

    @contextmanager
    def upload(self, token: str) -> Iterator[Upload]:
        """Write a blob: it appears whole when the block ends, or not at all."""
        target = self.path(token)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                yield Upload(out, self.limit_bytes)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def fetch(self, url: str, dest: Path) -> None:
        """Copy the blob at `url` to `dest`: ours from disk, anything else over HTTP(S)."""
        parsed = urlparse(url)
        match = re.fullmatch(r"/sources/([A-Za-z0-9_-]+)", parsed.path)
        if match and TOKEN.fullmatch(match[1]) and self.exists(match[1]):
            shutil.copyfile(self.path(match[1]), dest)
            return
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
