"""What of a secret-bearing URL may be written to a log: its scheme, host and port.

Drain URLs, add-on URLs and the like carry credentials in the user info, and often in the path
or the query (a token as the last path segment, `?key=`), so all of those are left out.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """`https://user:pw@logs.example.com:8443/token?k=v` -> `https://logs.example.com:8443`."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, a bad IPv6 literal
        return "(unparseable URL)"
    if not parts.scheme or not host:
        return "(unparseable URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")
