"""What a test server left running, read from /proc: its git processes (http-backend,
receive-pack, index-pack, the hooks) and the sockets they hold."""

from __future__ import annotations

from pathlib import Path


def git_processes(home: Path) -> dict[int, str]:
    """pid → command line of every live process serving git for the waka at `home` (they all
    carry GIT_PROJECT_ROOT=<home>/repos in their environment)."""
    marker = f"GIT_PROJECT_ROOT={home / 'repos'}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie holds nothing
            found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
    return found


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def sockets_of(pid: int) -> set[str]:
    """The socket inodes process `pid` holds open."""
    held = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                held.add(target[len("socket:[") : -1])
    except OSError:
        pass
    return held


def wait_until_git_ends(home: Path, timeout: float = 30.0) -> None:
    """Wait for every git process of the waka at `home` to end; fail naming those left."""
    import time

    deadline = time.monotonic() + timeout
    while (left := git_processes(home)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not left, f"git processes left behind after {timeout:.0f} s: {left}"
