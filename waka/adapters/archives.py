"""Tar archives (source tarballs, slugs, buildpacks): extract them safely, create them repeatably.

`safe_extract` checks every member before it writes anything, so a hostile archive is refused
whole and leaves nothing behind. The checks run on the archive's own names and links, simulating
the extraction (a link planted by an earlier member counts); tarfile's extraction filters run
as well, as a second line of defence that also sees what is already on disk.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

_MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit


class UnsafeArchive(ValueError):
    """The archive would write outside its destination, or holds what an app never needs."""


def safe_extract(
    source: Path | BinaryIO,
    dest: Path,
    *,
    max_bytes: int | None = None,
    strip_prefix: str = "",
    allow_absolute_symlinks: bool = False,
) -> None:
    """Extract the tar archive `source` (plain or gzip, detected) into `dest`, or refuse it.

    Refused, naming the member, before anything is written: absolute names, `..` components,
    names under a symlink, symlinks resolving outside `dest`, hard links to anything but an
    earlier regular file, devices and FIFOs, and more than `max_bytes` of file content.

    `strip_prefix` (e.g. "app") extracts only what is under that directory, with it removed:
    every other member is refused. `allow_absolute_symlinks` keeps links such as
    `python -> /usr/bin/python3`, which mean something only inside a container (slugs have
    them); they are never followed while extracting. Without a stream's seek, the archive is
    first spooled to a temporary file (every member is read twice: check, then extract).
    """
    with _open(source) as archive:
        try:
            listing = archive.getmembers()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise UnsafeArchive(f"not a readable tar archive (plain or gzip): {error}") from error
        members = _checked(listing, max_bytes, strip_prefix.strip("/"), allow_absolute_symlinks)
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        try:
            archive.extractall(dest, members=members, filter=_second_line(allow_absolute_symlinks))
        except BaseException as error:
            if created:  # nothing half-extracted is left where a caller would look
                shutil.rmtree(dest, ignore_errors=True)
            if isinstance(error, tarfile.FilterError):  # e.g. through a link already in dest
                raise UnsafeArchive(f"archive member {error.tarinfo.name!r}: {error}") from error
            raise


def make_tarball(src_dir: Path, dest: Path, *, prefix: str = "") -> None:
    """Write `src_dir` as a gzip tarball `dest`, its members under `prefix` (e.g. "./app").

    The same tree always gives the same bytes: members in sorted order, no owner names or ids
    (everything extracts as the extracting user), a zero gzip timestamp. Modes, modification
    times (Python's .pyc files are checked against them), symlinks and hard links are kept;
    sockets, FIFOs and devices are left out.
    """
    with dest.open("wb") as out:
        write_tarball(src_dir, out, prefix=prefix)


def write_tarball(src_dir: Path, out: BinaryIO, *, prefix: str = "") -> None:
    """`make_tarball` into an open binary file (which only needs `write`)."""
    prefix = prefix.rstrip("/")
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        if prefix and prefix != ".":
            archive.add(src_dir, arcname=prefix, recursive=False, filter=_anonymous)
        for path, relative in _walk(src_dir):
            name = posixpath.join(prefix, relative) if prefix else relative
            archive.add(path, arcname=name, recursive=False, filter=_anonymous)


def _walk(root: Path, relative: str = "") -> Iterator[tuple[Path, str]]:
    with os.scandir(root / relative if relative else root) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        name = posixpath.join(relative, entry.name) if relative else entry.name
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            yield Path(entry.path), name
            yield from _walk(root, name)
        elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            yield Path(entry.path), name


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@contextmanager
def _open(source: Path | BinaryIO) -> Iterator[tarfile.TarFile]:
    with ExitStack() as stack:
        try:
            if isinstance(source, str | os.PathLike):
                archive = stack.enter_context(tarfile.open(name=os.fspath(source), mode="r:*"))
            else:
                if not _seekable(source):
                    # Checking every member before writing means reading the archive twice.
                    spool = stack.enter_context(tempfile.TemporaryFile())
                    shutil.copyfileobj(source, spool, 1 << 20)
                    spool.seek(0)
                    source = spool
                archive = stack.enter_context(tarfile.open(fileobj=source, mode="r:*"))
        except tarfile.ReadError as error:
            raise UnsafeArchive(f"not a readable tar archive (plain or gzip): {error}") from error
        yield archive


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError):
        return False


def _checked(
    members: list[tarfile.TarInfo], max_bytes: int | None, prefix: str, absolute_ok: bool
) -> list[tarfile.TarInfo]:
    """The members to extract (renamed when a prefix is stripped), or UnsafeArchive."""
    kinds: dict[str, str] = {}  # name as it will be on disk -> "dir", "file" or "link"
    links: dict[str, str] = {}  # symlink name -> its target
    total = 0
    keep = []
    for member in members:
        label = f"archive member {member.name!r}"
        name = _inside(member.name, label, prefix)
        if name is None:  # the archive's root (or the stripped prefix) itself
            continue
        parent = posixpath.dirname(name)
        for ancestor in _ancestors(parent):
            if kinds.get(ancestor, "dir") != "dir":
                raise UnsafeArchive(f"{label} is under {ancestor!r}, which is not a directory")
        if name in kinds and not (kinds[name] == "dir" and member.isdir()):
            raise UnsafeArchive(f"{label} appears twice in the archive")
        if member.isdir():
            kinds[name] = "dir"
        elif member.isreg():
            kinds[name] = "file"
            total += member.size
            if max_bytes is not None and total > max_bytes:
                raise UnsafeArchive(
                    f"{label}: the archive holds more than {max_bytes} bytes when extracted"
                )
        elif member.issym():
            target = member.linkname
            if posixpath.isabs(target):
                if not absolute_ok:
                    raise UnsafeArchive(f"{label} is a symlink to an absolute path ({target!r})")
            elif _resolve(posixpath.join(parent, target), links) is None:
                raise UnsafeArchive(f"{label} is a symlink that leads outside ({target!r})")
            kinds[name] = "link"
            links[name] = target
        elif member.islnk():
            target = _inside(member.linkname, f"{label} (a hard link)", prefix)
            if target is None or kinds.get(target) != "file":
                raise UnsafeArchive(
                    f"{label} is a hard link to {member.linkname!r}, "
                    "which is not a file earlier in the archive"
                )
            kinds[name] = "file"
            member = member.replace(linkname=target, deep=False)
        else:
            raise UnsafeArchive(f"{label} is a device, FIFO or other special file")
        keep.append(member.replace(name=name, deep=False) if name != member.name else member)
    return keep


def _inside(raw: str, label: str, prefix: str) -> str | None:
    """`raw` as a clean relative name, without `prefix`; None for the root itself."""
    if raw.startswith("/"):
        raise UnsafeArchive(f"{label} has an absolute path")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{label} has a '..' component")
    if "\0" in raw:
        raise UnsafeArchive(f"{label} has a NUL byte in its name")
    if prefix:
        head = prefix.split("/")
        if parts[: len(head)] != head:
            if parts == head[: len(parts)]:
                return None  # "." or a parent of the prefix: nothing to write
            raise UnsafeArchive(f"{label} is not under {prefix + '/'!r}")
        parts = parts[len(head) :]
    return "/".join(parts) or None


def _ancestors(path: str) -> Iterator[str]:
    parts = path.split("/") if path else []
    for end in range(1, len(parts) + 1):
        yield "/".join(parts[:end])


def _resolve(path: str, links: dict[str, str], hops: int = 0) -> str | None:
    """Where `path` (relative to the destination) leads, following the archive's symlinks,
    or None if it leaves the destination (or loops)."""
    resolved: list[str] = []
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(part)
        current = "/".join(resolved)
        if current in links:
            target = links[current]
            if posixpath.isabs(target) or hops >= _MAX_LINK_HOPS:
                return None  # leads off into the container's file system, or loops
            rest = "/".join(parts[index + 1 :])
            base = posixpath.dirname(current)
            return _resolve(posixpath.join(base, target, rest), links, hops + 1)
    return "/".join(resolved)


def _second_line(absolute_ok: bool):
    """tarfile's own filters: "data" for everything but links we allow to be absolute."""

    def extraction_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        if absolute_ok and member.issym() and posixpath.isabs(member.linkname):
            return tarfile.tar_filter(member, path)  # still refuses a target path outside
        return tarfile.data_filter(member, path)

    return extraction_filter
