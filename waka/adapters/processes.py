"""Is a given process still the one we knew? A pid alone can be reused after the process
dies; the pid with its start time (from /proc) names one process for good."""

from __future__ import annotations

import os
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if there is no such
    process (or no /proc to ask)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command) is in parentheses and may hold spaces: split after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19]  # field 22 of the whole line: starttime


def identity(pid: int | None = None) -> str:
    """`pid:starttime` of this process (or `pid`), to hand to a child."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{start_time(pid) or ''}"


def alive(identity_: str) -> bool:
    """Whether the process named by `identity()` still runs (a zombie counts as gone)."""
    pid_text, _, started = identity_.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if state[state.rindex(")") + 2 :].startswith("Z"):
        return False
    return not started or start_time(pid) == started
