"""Heroku's list pagination: `Range: <field> [start]..[end]; max=N, order=asc|desc`.

A page that leaves items out answers 206 with `Next-Range` for the client to send next;
`]value..` means "after value" (exclusive), which is what Next-Range always uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waka.api.errors import bad_request

DEFAULT_MAX = 200
LIMIT = 1000

_RANGE = re.compile(
    r"^\s*(?P<field>[a-z_]+)\s*(?P<excl>\])?(?P<start>[^.;]*)\.\.(?P<end>[^;]*)"
    r"(?:;\s*(?P<opts>.*))?$"
)


@dataclass(frozen=True)
class Range:
    field: str
    start: str = ""
    exclusive: bool = False
    end: str = ""
    max: int = DEFAULT_MAX
    descending: bool = False


def parse_range(header: str | None, fields: list[str]) -> Range:
    if not header:
        return Range(field=fields[0])
    match = _RANGE.match(header)
    if not match:
        raise bad_request(f"Invalid Range header {header!r}: expected e.g. 'id ..; max=200'.")
    field = match["field"]
    if field not in fields:
        raise bad_request(
            f"Range header field {field!r} is not sortable here; use one of: {', '.join(fields)}."
        )
    max_items, descending = DEFAULT_MAX, False
    for option in filter(None, (o.strip() for o in (match["opts"] or "").split(","))):
        key, _, value = option.partition("=")
        key, value = key.strip(), value.strip()
        if key == "max":
            if not value.isdigit() or not 1 <= int(value) <= LIMIT:
                raise bad_request(f"Range max must be a number from 1 to {LIMIT}.")
            max_items = int(value)
        elif key == "order":
            if value not in ("asc", "desc"):
                raise bad_request("Range order must be asc or desc.")
            descending = value == "desc"
        else:
            raise bad_request(f"Unknown Range option {key!r}; use max and order.")
    return Range(
        field=field,
        start=match["start"].strip(),
        exclusive=bool(match["excl"]),
        end=match["end"].strip(),
        max=max_items,
        descending=descending,
    )


def paginate(
    items: list[dict[str, Any]], header: str | None, fields: dict[str, Callable[[Any], Any]]
) -> tuple[int, list[dict[str, Any]], dict[str, str]]:
    """Sort and cut `items` per the Range header. `fields` maps a field name to a key function
    of the item; the first is the default. Returns (status, page, headers)."""
    wanted = parse_range(header, list(fields))
    key = fields[wanted.field]

    def as_key(raw: str) -> Any:
        sample = key(items[0]) if items else ""
        if isinstance(sample, int):
            if not raw.isdigit():
                raise bad_request(f"Range start and end for {wanted.field} must be numbers.")
            return int(raw)
        return raw

    ordered = sorted(items, key=key, reverse=wanted.descending)
    if wanted.start:
        start = as_key(wanted.start)
        if wanted.descending:
            ordered = [
                i for i in ordered if key(i) < start or (key(i) == start and not wanted.exclusive)
            ]
        else:
            ordered = [
                i for i in ordered if key(i) > start or (key(i) == start and not wanted.exclusive)
            ]
    if wanted.end:
        end = as_key(wanted.end)
        ordered = [i for i in ordered if (key(i) >= end if wanted.descending else key(i) <= end)]
    page = ordered[: wanted.max]
    order = "desc" if wanted.descending else "asc"
    headers = {"Accept-Ranges": ", ".join(fields)}
    if page:
        headers["Content-Range"] = (
            f"{wanted.field} {key(page[0])}..{key(page[-1])}; max={wanted.max}, order={order}"
        )
    if len(ordered) > len(page):
        headers["Next-Range"] = (
            f"{wanted.field} ]{key(page[-1])}..; max={wanted.max}, order={order}"
        )
        return 206, page, headers
    return 200, page, headers
