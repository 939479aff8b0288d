"""Slugs: an app's compiled /app directory as a gzip tarball, content-addressed by SHA-256.

As on Heroku, a slug's members are under `./app/`, and a slug over 500 MB (compressed) is
refused. The slug id is a UUID derived from the checksum, so the same content always gets the
same id and storing it twice is harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from waka.adapters.archives import safe_extract, write_tarball
from waka.adapters.blobs import BlobStore, get_file, put_file

DEFAULT_LIMIT_BYTES = 500 * 1024 * 1024
DEFAULT_CACHE_BYTES = 10 * 1024**3  # each home's cache of shared slugs (WAKA_SLUG_CACHE_MB)
KEEP_USED = 3600.0  # seconds: a cached slug used this recently is never removed
APP_DIR = "app"
SLUG_PREFIX = f"./{APP_DIR}"  # members are ./app/...
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "waka:slugs")  # fixed forever: ids depend on it


@dataclass(frozen=True)
class Slug:
    id: str
    checksum: str  # "SHA256:<hex>", as Heroku's slug checksum
    size: int  # bytes of the compressed tarball
    path: Path


class SlugTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"Compiled slug size: {_megabytes(size)} is too large (max is {_megabytes(limit)})."
        )
        self.size = size
        self.limit = limit


class SlugNotFound(KeyError):
    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


class SlugStore(Protocol):
    def create(self, app_dir: Path) -> Slug:
        """Pack `app_dir` (the future /app) into a slug; SlugTooLarge over the limit."""
        ...

    def get(self, slug_id: str) -> Slug:
        """The slug with this id; SlugNotFound (a KeyError) if there is none."""
        ...

    def extract(self, slug_id: str, dest: Path) -> None:
        """Unpack the slug so that `dest` IS the app directory (what /app holds: `dest/Procfile`,
        not `dest/app/Procfile`). Absolute symlinks are kept (a venv's `python -> /usr/bin/...`
        means something inside the container); nothing may escape `dest`."""
        ...


def slug_id(checksum: str) -> str:
    """The slug id for a checksum ("SHA256:<hex>"): the same content, the same id."""
    return str(uuid.uuid5(_NAMESPACE, checksum))


class LocalSlugStore:
    """Slugs as `<root>/<sha256-hex>.tgz`, each written to a temporary file and renamed into
    place, so a crash never leaves half a slug under a slug's name."""

    def __init__(self, root: Path, *, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self._by_id: dict[str, Path] = {}

    def create(self, app_dir: Path) -> Slug:
        if not app_dir.is_dir():
            raise NotADirectoryError(f"{app_dir} is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=".incoming-", suffix=".tgz")
        try:
            with os.fdopen(fd, "wb") as raw:
                out = _Hashing(raw)
                write_tarball(app_dir, out, prefix=SLUG_PREFIX)
                raw.flush()
                os.fsync(raw.fileno())
            if out.size > self.limit_bytes:
                raise SlugTooLarge(out.size, self.limit_bytes)
            path = self.root / f"{out.digest.hexdigest()}.tgz"
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        slug = self._slug(path)
        self._by_id[slug.id] = path
        return slug

    def get(self, slug_id: str) -> Slug:
        path = self._by_id.get(slug_id)
        if path is None or not path.exists():
            # Written by another process, or before this one started: look once more.
            self._by_id = {
                _id_of(found): found
                for found in self.root.glob("*.tgz")
                if re.fullmatch(r"[0-9a-f]{64}\.tgz", found.name)
            }
            path = self._by_id.get(slug_id)
        if path is None:
            raise SlugNotFound(f"slug {slug_id} is not in the slug store at {self.root}")
        return self._slug(path)

    def extract(self, slug_id: str, dest: Path) -> None:
        slug = self.get(slug_id)
        safe_extract(slug.path, dest, strip_prefix=APP_DIR, allow_absolute_symlinks=True)

    @staticmethod
    def _slug(path: Path) -> Slug:
        checksum = f"SHA256:{path.stem}"
        return Slug(id=slug_id(checksum), checksum=checksum, size=path.stat().st_size, path=path)


class SharedSlugStore(LocalSlugStore):
    """Slugs in a blob store every process of the platform shares (`slugs/<slug id>.tgz`;
    PostgreSQL), each process keeping those it made or used in a cache under its own home:
    `get(id).path` and `extract` work on a file, and a dyno started from a slug is started
    from that file. A slug is fetched once per home; its content is checked against its id.

    The cache is bounded: once it holds more than `cache_bytes`, the slugs least recently used
    go, but never one used in the last KEEP_USED seconds (a caller may be about to read the
    file `get` gave it). A slug that went is fetched again when next needed."""

    def __init__(
        self,
        blobs: BlobStore,
        cache_root: Path,
        *,
        prefix: str = "slugs/",
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        super().__init__(cache_root, limit_bytes=limit_bytes)
        self.blobs = blobs
        self.prefix = prefix
        self.cache_bytes = cache_bytes

    def create(self, app_dir: Path) -> Slug:
        slug = super().create(app_dir)
        key = f"{self.prefix}{slug.id}.tgz"
        stored = self.blobs.stat(key)
        if stored is None or f"SHA256:{stored.sha256}" != slug.checksum:
            put_file(self.blobs, key, slug.path)  # writers of one slug race harmlessly
        self.trim()
        return slug

    def get(self, slug_id: str) -> Slug:
        try:
            slug = super().get(slug_id)
            os.utime(slug.path)  # a use: last to go
            return slug
        except (SlugNotFound, FileNotFoundError):  # not cached here, or just trimmed
            pass
        slug = self._fetch(slug_id)
        self.trim()
        return slug

    def trim(self, now: float | None = None) -> list[Path]:
        """Remove the least recently used slugs until the cache is within `cache_bytes`;
        what went."""
        now = time.time() if now is None else now
        cached = []
        for path in self.root.glob("*.tgz"):
            with contextlib.suppress(FileNotFoundError):  # another process trims too
                stat = path.stat()
                cached.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in cached)
        removed = []
        for used, size, path in sorted(cached):
            if total <= self.cache_bytes:
                break
            if now - used < KEEP_USED:
                break  # every other is as recent
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
            removed.append(path)
        if removed:
            self._by_id = {i: p for i, p in self._by_id.items() if p not in removed}
        return removed

    def _fetch(self, slug_id: str) -> Slug:
        try:
            key = f"{self.prefix}{uuid.UUID(slug_id)}.tgz"
        except ValueError:
            raise SlugNotFound(f"slug {slug_id} is not a slug id") from None
        stored = self.blobs.stat(key)
        if stored is None:
            raise SlugNotFound(f"slug {slug_id} is not in the shared slug store")
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{stored.sha256}.tgz"
        fetched = get_file(self.blobs, key, path)
        content_id = str(uuid.uuid5(_NAMESPACE, f"SHA256:{fetched.sha256}"))
        if content_id != slug_id or fetched.sha256 != stored.sha256:  # never run another
            path.unlink(missing_ok=True)
            raise SlugNotFound(f"slug {slug_id}: the stored content is another ({fetched.sha256})")
        self._by_id[slug_id] = path
        return self._slug(path)


def _id_of(path: Path) -> str:
    return slug_id(f"SHA256:{path.stem}")


class _Hashing:
    """A write-only file that hashes and counts what passes through (no second read)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _megabytes(size: int) -> str:
    """Heroku's sizes: whole megabytes, rounded up, so 500 MiB and a byte shows as 501M."""
    if size < 2**20:  # only with the small limits of tests
        return f"{math.ceil(size / 1024)}K"
    return f"{math.ceil(size / 2**20)}M"
