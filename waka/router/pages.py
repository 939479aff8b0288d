"""The pages the router answers with itself, as Heroku's router does: unstyled HTML."""

from __future__ import annotations

_PAGE = """<!DOCTYPE html>
<html>
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{title}</title>
  </head>
  <body>
    <h1>{title}</h1>
    <p>{text}</p>
  </body>
</html>
"""

APPLICATION_ERROR = _PAGE.format(
    title="Application Error",
    text="An error occurred in the application and your page could not be served. If you are "
    "the application owner, check your logs for details. You can do this from the Heroku CLI "
    "with the command <code>heroku logs --tail</code>",
).encode()

MAINTENANCE = _PAGE.format(
    title="Offline for Maintenance",
    text="This app is undergoing maintenance right now. Please check back later.",
).encode()

NO_SUCH_APP = _PAGE.format(
    title="No such app",
    text="There is no app configured at that hostname. If you are the application owner, "
    "check that the app name or custom domain is right.",
).encode()

BAD_REQUEST = _PAGE.format(
    title="Bad Request", text="The router could not understand this request."
).encode()

REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}


def response(status: int, page: bytes, *, head_only: bool = False, close: bool = False) -> bytes:
    """A complete response carrying `page` (its length only, for HEAD)."""
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Cache-Control: no-cache, no-store\r\n%s\r\n"
        % (
            status,
            REASONS.get(status, b"Error"),
            len(page),
            b"Connection: close\r\n" if close else b"",
        )
    )
    return head if head_only else head + page
