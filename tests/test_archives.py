"""Safe extraction refuses hostile archives whole (writing nothing); benign ones round-trip."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from waka.adapters.archives import UnsafeArchive, make_tarball, safe_extract

Member = tuple[tarfile.TarInfo, bytes | None]


def regular(name: str, data: bytes = b"data\n", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def directory(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def special(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


def archive(*members: Member, compression: str = "gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


HOSTILE = {
    "dotdot": ([regular("../x")], "'../x'", "'..' component"),
    "dotdot-deep": ([regular("a/../../x")], "'a/../../x'", "'..' component"),
    "absolute": ([regular("/etc/x")], "'/etc/x'", "absolute path"),
    "symlink-absolute": ([link("passwd", "/etc/passwd")], "'passwd'", "absolute path"),
    "symlink-up": ([link("a", "../../x")], "'a'", "leads outside"),
    "symlink-chain": (
        # Lexically sub/l1/../.. is the root; through l1 (-> the root) it is one level above.
        [link("sub/l1", ".."), link("sub/l2", "l1/../..")],
        "'sub/l2'",
        "leads outside",
    ),
    "write-through-symlink": (
        [directory("sub"), link("d", "sub"), regular("d/x")],
        "'d/x'",
        "not a directory",
    ),
    "hardlink-absolute": ([link("h", "/etc/passwd", tarfile.LNKTYPE)], "'h'", "absolute path"),
    "hardlink-up": ([link("h", "../x", tarfile.LNKTYPE)], "'h'", "'..' component"),
    "hardlink-unknown": ([link("h", "etc/passwd", tarfile.LNKTYPE)], "'h'", "not a file earlier"),
    "hardlink-to-symlink": (
        [link("l", "f"), link("h", "l", tarfile.LNKTYPE)],
        "'h'",
        "not a file earlier",
    ),
    "char-device": ([special("null", tarfile.CHRTYPE)], "'null'", "device, FIFO"),
    "block-device": ([special("sda", tarfile.BLKTYPE)], "'sda'", "device, FIFO"),
    "fifo": ([special("pipe", tarfile.FIFOTYPE)], "'pipe'", "device, FIFO"),
    "duplicate": ([regular("x"), link("x", ".")], "'x'", "appears twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_before_anything_is_written(tmp_path: Path, case: str) -> None:
    members, name, reason = HOSTILE[case]
    tarball = tmp_path / "hostile.tgz"
    # A benign member first: refusing must happen before it is written.
    tarball.write_bytes(archive(regular("first.txt"), *members))
    dest = tmp_path / "work" / "out"

    with pytest.raises(UnsafeArchive) as refused:
        safe_extract(tarball, dest)

    assert name in str(refused.value)
    assert reason in str(refused.value)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.tgz"]  # nothing escaped


def test_refusal_into_an_existing_directory_keeps_it_as_it_was(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine").write_text("kept")
    tarball = io.BytesIO(archive(regular("first.txt"), regular("../x")))

    with pytest.raises(UnsafeArchive):
        safe_extract(tarball, dest)

    assert [p.name for p in dest.iterdir()] == ["mine"]


def test_a_link_already_in_dest_is_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "evil").symlink_to(outside)

    with pytest.raises(UnsafeArchive, match="'evil/x'"):
        safe_extract(io.BytesIO(archive(regular("evil/x"))), dest)

    assert list(outside.iterdir()) == []


def test_benign_archive_extracts_with_relative_links_and_modes(tmp_path: Path) -> None:
    tarball = archive(
        directory("."),
        directory("node_modules"),
        regular("node_modules/tool/cli.js", b"#!/usr/bin/env node\n", mode=0o755),
        link("node_modules/.bin/tool", "../tool/cli.js"),
        link("current", "node_modules/tool"),
        regular("README", b"hello\n"),
        link("README.hard", "README", tarfile.LNKTYPE),
    )
    dest = tmp_path / "out"

    safe_extract(io.BytesIO(tarball), dest)

    tool = dest / "node_modules/.bin/tool"
    assert tool.is_symlink()
    assert os.readlink(tool) == "../tool/cli.js"
    assert tool.read_bytes() == b"#!/usr/bin/env node\n"
    assert os.readlink(dest / "current") == "node_modules/tool"
    assert stat.S_IMODE((dest / "node_modules/tool/cli.js").stat().st_mode) == 0o755
    assert (dest / "README.hard").stat().st_ino == (dest / "README").stat().st_ino


@pytest.mark.parametrize("compression", ["gz", ""])
def test_plain_and_gzip_archives_and_unseekable_streams(tmp_path: Path, compression: str) -> None:
    data = archive(regular("a/b.txt", b"content"), compression=compression)

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            chunk = self.inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    safe_extract(Unseekable(), tmp_path / "out")

    assert (tmp_path / "out/a/b.txt").read_bytes() == b"content"


def test_size_limit_counts_the_whole_archive(tmp_path: Path) -> None:
    tarball = archive(regular("one", b"x" * 600), regular("two", b"y" * 600))

    with pytest.raises(UnsafeArchive, match=r"'two'.*more than 1000 bytes"):
        safe_extract(io.BytesIO(tarball), tmp_path / "small", max_bytes=1000)
    assert not (tmp_path / "small").exists()

    safe_extract(io.BytesIO(tarball), tmp_path / "big", max_bytes=1200)
    assert (tmp_path / "big/two").stat().st_size == 600


def test_strip_prefix_keeps_only_what_is_under_it(tmp_path: Path) -> None:
    slug = archive(directory("./app"), regular("./app/Procfile", b"web: x\n"))
    safe_extract(io.BytesIO(slug), tmp_path / "app", strip_prefix="app")
    assert (tmp_path / "app/Procfile").read_bytes() == b"web: x\n"

    stray = archive(regular("./app/Procfile"), regular("./etc/cron"))
    with pytest.raises(UnsafeArchive, match=r"'\./etc/cron' is not under 'app/'"):
        safe_extract(io.BytesIO(stray), tmp_path / "other", strip_prefix="app")


def test_absolute_symlinks_only_when_allowed_and_never_written_through(tmp_path: Path) -> None:
    venv = archive(link("bin/python", "/usr/bin/python3"))
    safe_extract(io.BytesIO(venv), tmp_path / "kept", allow_absolute_symlinks=True)
    assert os.readlink(tmp_path / "kept/bin/python") == "/usr/bin/python3"

    through = archive(link("etc", "/etc"), regular("etc/waka-test"))
    with pytest.raises(UnsafeArchive, match="'etc/waka-test'"):
        safe_extract(io.BytesIO(through), tmp_path / "refused", allow_absolute_symlinks=True)
    assert not Path("/etc/waka-test").exists()


def test_a_failure_while_writing_leaves_no_half_extracted_directory(tmp_path: Path) -> None:
    too_long = "n" * 300  # the file system refuses the name (ENAMETOOLONG) mid-extraction
    tarball = archive(regular("first"), regular(too_long))

    with pytest.raises(OSError, match="too long"):
        safe_extract(io.BytesIO(tarball), tmp_path / "out")

    assert not (tmp_path / "out").exists()


def test_garbage_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="not a readable tar archive"):
        safe_extract(io.BytesIO(b"\x1f\x8b" + b"not really gzip" * 10), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_make_tarball_is_repeatable_and_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin/run").write_text("#!/bin/sh\necho hi\n")
    (src / "bin/run").chmod(0o755)
    (src / "lib").mkdir()
    (src / "lib/data").write_text("data")
    (src / "link").symlink_to("lib/data")
    (src / "libdir").symlink_to("lib")  # a link to a directory is kept, not followed
    os.mkfifo(src / "fifo")  # not something a tarball of an app should carry

    make_tarball(src, tmp_path / "one.tgz", prefix="./app")
    make_tarball(src, tmp_path / "two.tgz", prefix="./app")

    assert (tmp_path / "one.tgz").read_bytes() == (tmp_path / "two.tgz").read_bytes()
    assert (tmp_path / "one.tgz").read_bytes()[4:8] == bytes(4)  # no gzip timestamp
    with tarfile.open(tmp_path / "one.tgz") as tar:
        names = tar.getnames()
        assert all(info.uid == 0 and info.uname == "" for info in tar.getmembers())
    assert names == sorted(names) and names[0] == "./app"
    assert "./app/fifo" not in names

    safe_extract(tmp_path / "one.tgz", tmp_path / "out", strip_prefix="app")
    out = tmp_path / "out"
    assert os.readlink(out / "link") == "lib/data"
    assert os.readlink(out / "libdir") == "lib"
    assert stat.S_IMODE((out / "bin/run").stat().st_mode) == 0o755
    assert (out / "lib/data").read_text() == "data"
