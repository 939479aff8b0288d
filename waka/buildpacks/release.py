"""Reading what a buildpack's bin/release prints: the small YAML subset buildpacks emit.

    ---
    addons: []
    config_vars:
      KEY: value
    default_process_types:
      web: bin/start "$PORT"

Only top-level keys with either an inline value or one level of `key: scalar` (or `- item`)
lines are understood; that is all the v2 contract uses, and it saves a YAML dependency.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_KEY = r"""("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s"'#:][^:]*?)"""
_TOP = re.compile(rf"^{_KEY}\s*:(?:\s+(.*))?$")
_NESTED = re.compile(rf"^\s+{_KEY}\s*:(?:\s+(.*))?$")
_ITEM = re.compile(r"^\s+-(?:\s|$)")
_NULLS = ("", "~", "null", "Null", "NULL")


class ReleaseError(ValueError):
    """bin/release printed something that isn't the YAML the v2 contract describes."""


@dataclass(frozen=True)
class ReleaseInfo:
    default_process_types: dict[str, str] = field(default_factory=dict)
    config_vars: dict[str, str] = field(default_factory=dict)
    addons: list[str] = field(default_factory=list)


def parse_release(text: str) -> ReleaseInfo:
    sections: dict[str, dict[str, str]] = {"default_process_types": {}, "config_vars": {}}
    addons: list[str] = []
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment_line(raw)
        if line is None or line.strip() in ("---", "..."):
            continue
        if not line[0].isspace():
            match = _TOP.match(line)
            if not match:
                raise ReleaseError(f"bin/release line {number}: expected 'key: value', got {raw!r}")
            current = _scalar(match.group(1), number)
            _check_inline(current, match.group(2), number)
            continue
        if current is None:
            raise ReleaseError(f"bin/release line {number}: indented line outside a section")
        if _ITEM.match(line):
            if current == "addons":
                addons.append(_scalar(line.strip()[1:].strip(), number))
            continue  # list items of other keys are not part of the contract
        match = _NESTED.match(line)
        if not match:
            raise ReleaseError(f"bin/release line {number}: expected 'key: value', got {raw!r}")
        if current in sections:
            key = _scalar(match.group(1), number)
            value = _scalar(match.group(2) or "", number)
            if not value:
                raise ReleaseError(f"bin/release line {number}: {key!r} has no value")
            sections[current][key] = value
    return ReleaseInfo(sections["default_process_types"], sections["config_vars"], addons)


def _strip_comment_line(raw: str) -> str | None:
    if not raw.strip() or raw.lstrip().startswith("#"):
        return None
    return raw.rstrip()


def _check_inline(key: str, value: str | None, number: int) -> None:
    """A top-level key may only carry an empty flow collection or a null inline."""
    value = _plain(value or "")
    if value in (*_NULLS, "{}", "[]"):
        return
    if key in ("default_process_types", "config_vars", "addons"):
        raise ReleaseError(
            f"bin/release line {number}: write {key} as an indented block, not {value!r}"
        )


def _plain(value: str) -> str:
    """A plain scalar without its trailing ` # comment`."""
    return re.split(r"\s#", value, maxsplit=1)[0].strip()


def _scalar(token: str, number: int) -> str:
    token = token.strip()
    if token.startswith('"'):
        end = _closing_double_quote(token)
        if end < 0:
            raise ReleaseError(f"bin/release line {number}: unterminated string {token!r}")
        inner = token[: end + 1]
        try:
            return json.loads(inner)
        except ValueError:  # YAML escapes JSON lacks (\e, \x..): keep them literally
            return inner[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if token.startswith("'"):
        match = re.match(r"'((?:[^']|'')*)'", token)
        if not match:
            raise ReleaseError(f"bin/release line {number}: unterminated string {token!r}")
        return match.group(1).replace("''", "'")
    value = _plain(token)
    return "" if value in _NULLS else value


def _closing_double_quote(token: str) -> int:
    escaped = False
    for index, char in enumerate(token[1:], start=1):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return index
    return -1
