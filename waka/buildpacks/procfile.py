"""The Procfile: one `name: command` per line, naming the app's process types."""

from __future__ import annotations

import re

PROCESS_TYPE = re.compile(r"^[a-zA-Z0-9_-]+$")


class ProcfileError(ValueError):
    """A Procfile that can't be used; the message names the offending line."""


def parse_procfile(text: str) -> dict[str, str]:
    """Process types in file order. Blank lines and lines starting with `#` are skipped.

    Heroku silently ignores lines it can't parse; waka refuses them instead, so a typo
    doesn't quietly drop a process type from the release.
    """
    processes: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        name, command = name.strip(), command.strip()
        if not sep or not name:
            raise ProcfileError(f'Procfile line {number}: expected "name: command", got {line!r}')
        if not PROCESS_TYPE.match(name):
            raise ProcfileError(
                f"Procfile line {number}: invalid process type {name!r} "
                '(use letters, digits, "_" and "-")'
            )
        if not command:
            raise ProcfileError(f"Procfile line {number}: process type {name!r} has no command")
        if name in first_seen:
            raise ProcfileError(
                f"Procfile line {number}: process type {name!r} is declared twice "
                f"(first on line {first_seen[name]})"
            )
        first_seen[name] = number
        processes[name] = command
    return processes
