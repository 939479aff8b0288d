"""Each app's build cache: what buildpacks keep between builds (installed dependencies).

A build runs against a directory, `$WAKA_HOME/cache/<app id>`. Where processes share a blob
store (PostgreSQL), the cache is also a tarball there (`cache/<app id>.tgz`), as on Heroku: a
worker restores it before a build unless its directory already holds that very tarball's
content, and saves it after a build that compiled. Without a shared store the directory is
the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from waka.adapters.archives import safe_extract, write_tarball
from waka.adapters.blobs import BlobStore, get_file, put_file

MARKER = ".stored"  # `<app id>.stored`: the sha256 of the tarball the directory holds


class BuildCache:
    def __init__(self, root: Path, blobs: BlobStore | None = None, prefix: str = "cache/") -> None:
        self.root = root
        self.blobs = blobs
        self.prefix = prefix

    def path(self, app_id: str) -> Path:
        return self.root / app_id

    def _key(self, app_id: str) -> str:
        return f"{self.prefix}{uuid.UUID(app_id)}.tgz"

    def _marker(self, app_id: str) -> Path:
        return self.root / f"{app_id}{MARKER}"

    def restore(self, app_id: str) -> None:
        """Make the directory the app's stored cache (an empty one if there is none, or it
        was cleared elsewhere); a directory already holding it is left as it is."""
        if self.blobs is None:
            return
        stored = self.blobs.stat(self._key(app_id))
        marker = self._marker(app_id)
        held = marker.read_text().strip() if marker.is_file() else None
        if stored is None:
            if held is not None:  # cleared through another process
                self._remove_local(app_id)
            return
        if held == stored.sha256 and self.path(app_id).is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".restore-") as scratch:
            tarball = Path(scratch) / "cache.tgz"
            got = get_file(self.blobs, self._key(app_id), tarball)
            unpacked = Path(scratch) / "cache"
            safe_extract(tarball, unpacked, allow_absolute_symlinks=True)
            self._remove_local(app_id)
            unpacked.rename(self.path(app_id))
        marker.write_text(got.sha256 + "\n")

    def save(self, app_id: str) -> None:
        """Store the directory as the app's cache (nothing is sent when it did not change)."""
        directory = self.path(app_id)
        if self.blobs is None or not directory.is_dir():
            return
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".save-", suffix=".tgz")
        try:
            with os.fdopen(fd, "wb") as raw:
                out = _Hashing(raw)
                write_tarball(directory, out)
            stored = self.blobs.stat(self._key(app_id))
            if stored is None or stored.sha256 != out.digest.hexdigest():
                put_file(self.blobs, self._key(app_id), Path(tmp))
            self._marker(app_id).write_text(out.digest.hexdigest() + "\n")
        finally:
            Path(tmp).unlink(missing_ok=True)

    def clear(self, app_id: str) -> None:
        """`heroku builds:cache:purge`: the next build starts from nothing, on any worker."""
        if self.blobs is not None:
            self.blobs.delete(self._key(app_id))
        self._remove_local(app_id)

    def app_ids(self) -> set[str]:
        """Every app with a cache here or in the shared store."""
        found = set()
        if self.root.is_dir():
            found = {p.name for p in self.root.iterdir() if p.is_dir() and _is_id(p.name)}
        if self.blobs is not None:
            for key in self.blobs.keys(self.prefix):
                name = key.removeprefix(self.prefix).removesuffix(".tgz")
                if _is_id(name):
                    found.add(name)
        return found

    def _remove_local(self, app_id: str) -> None:
        self._marker(app_id).unlink(missing_ok=True)
        shutil.rmtree(self.path(app_id), ignore_errors=True)


def _is_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


class _Hashing:
    def __init__(self, raw: object) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.raw.write(data)  # type: ignore[attr-defined]

    def flush(self) -> None:
        self.raw.flush()  # type: ignore[attr-defined]
