"""What the benchmarks ran on, printed with their figures (`python bench/machine.py` alone too).

Figures from a busy machine mean little, so this also samples how busy the CPUs are just
before a run and says so when something else is using them.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return f"{line.partition('=')[2].strip(chr(34))}, Linux {platform.release()}"
    return platform.platform()


def postgres_version(url: str) -> str:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except Exception as error:  # report, don't fail: the SQLite half may still run
        return f"unreachable ({type(error).__name__})"


def waka_version() -> str:
    """The commit of the waka code measured, and whether waka/ had uncommitted changes."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=10
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "waka")
    return commit + (" with uncommitted changes in waka/" if dirty else "")


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs' time spent busy over the next `seconds` (0..1), from /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in _read("/proc/stat").splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (IndexError, ValueError):
        return float("nan")
    total = total1 - total0
    return 1 - (idle1 - idle0) / total if total else float("nan")


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot."""
    fields = [int(v) for v in _read("/proc/stat").splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


def _processes() -> dict[int, tuple[int, str, int, int]]:
    """pid -> (parent pid, command name, own CPU ticks, reaped children's CPU ticks)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read(f"/proc/{entry.name}/stat")
        if not stat:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        rest = stat[stat.rfind(")") + 2 :].split()
        # After the name: state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based.
        found[int(entry.name)] = (int(rest[1]), name, int(rest[11]) + int(rest[12]),
                                  int(rest[13]) + int(rest[14]))  # fmt: skip
    return found


class CpuWatch:
    """How much CPU other processes used while something was measured.

    Ours: this process, its descendants (the server, wrk) and PostgreSQL's processes (which
    may serve others too), including those that ended meanwhile.
    Everything else that was busy is someone else's, and makes the figures noisy."""

    def __init__(self) -> None:
        self.available = Path("/proc/stat").exists()
        self._start: tuple[int, int, dict[int, int]] = (0, 0, {})

    def _ours(self) -> dict[int, int]:
        processes = _processes()
        me = os.getpid()
        ours = {me}
        changed = True
        while changed:
            changed = False
            for pid, (ppid, _, _, _) in processes.items():
                if ppid in ours and pid not in ours:
                    ours.add(pid)
                    changed = True
        ticks = {}
        for pid, (_, name, own, reaped) in processes.items():
            # A process that ended since start() counts through its parent's reaped time:
            # this process reaps the server and wrk, PostgreSQL's postmaster its backends.
            if pid == me or name.startswith("postgres"):
                ticks[pid] = own + reaped
            elif pid in ours:
                ticks[pid] = own
        return ticks

    def start(self) -> None:
        if self.available:
            busy, total = _cpu_ticks()
            self._start = (busy, total, self._ours())

    def others_share(self) -> float:
        """Share of the machine's CPU time (0..1) used by other processes since start()."""
        if not self.available:
            return float("nan")
        busy0, total0, ours0 = self._start
        busy1, total1 = _cpu_ticks()
        ours1 = self._ours()
        ours = sum(t - ours0.get(pid, 0) for pid, t in ours1.items())
        elapsed = total1 - total0
        return max(0.0, (busy1 - busy0 - ours) / elapsed) if elapsed else float("nan")


def describe(database_url: str | None = None) -> list[str]:
    lines = [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; waka {waka_version()}",
        f"CPU: {cpu_model()}, {os.cpu_count()} cores; RAM {memory_gib():.1f} GiB",
        f"OS: {os_name()}",
        f"Python {platform.python_version()} ({platform.python_implementation()}); "
        f"SQLite {sqlite3.sqlite_version}"
        + (f"; PostgreSQL {postgres_version(database_url)}" if database_url else ""),
    ]
    busy = cpu_busy()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines.append(f"CPU busy before the run: {busy:.0%} (load average {load})")
    if busy > 0.15:
        lines.append("WARNING: something else is using the CPUs; these figures will be noisy.")
    return lines


if __name__ == "__main__":
    url = os.environ.get("WAKA_BENCH_DATABASE_URL") or (
        "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
    )
    print("\n".join(describe(url)))
