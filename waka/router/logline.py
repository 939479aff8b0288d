"""The router's log line, in Heroku's format, and its error codes.

    at=info method=GET path="/" host=myapp.localhost request_id=… fwd="127.0.0.1" dyno=web.2
    connect=0ms service=4ms status=200 bytes=1234 protocol=http
    at=error code=H14 desc="No web processes running" method=GET path="/" host=… request_id=…
    fwd="127.0.0.1" dyno= connect= service= status=503 bytes= protocol=http

Fields the router does not know (no dyno was reached, nothing was sent) stay empty, as Heroku's do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    desc: str
    at: str = "error"  # Heroku logs H27 and H80 at=info: they are not the app's fault
    status: int = 503  # what the client is answered


H10 = Code("H10", "App crashed")  # route.crashed, or waking the app failed
H12 = Code("H12", "Request timeout")  # no response head within first_byte_timeout
H13 = Code("H13", "Connection closed without response")
H14 = Code("H14", "No web processes running")
H17 = Code("H17", "Poorly formatted HTTP response")
H18 = Code("H18", "Server Request Interrupted")  # the dyno closed in the middle of its response
H19 = Code("H19", "Backend connection timeout")  # no dyno accepted within connect_timeout
H20 = Code("H20", "App boot timeout")  # a sleeping app did not wake within wake_timeout
H21 = Code("H21", "Backend connection refused")  # every dyno of the app refused the connection
# The client's body broke its framing (a bad chunk) once the app was known: 400, and the
# connection is closed, since where the next request would start is lost.
H26 = Code("H26", "Request Error", "error", 400)
H27 = Code("H27", "Client Request Interrupted", "info")  # logged with status 499
H80 = Code("H80", "Maintenance mode", "info")


# The checks below use translate, not `in`: for bytes it is the cheaper test by far.
def quote(text: bytes) -> bytes:
    """A value between double quotes."""
    if len(text.translate(None, b'"\\')) != len(text):
        return text.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return text


_tokens: dict[bytes, bytes] = {}  # Host values seen -> as logged: the same few come again


def _token(text: bytes) -> bytes:
    """A bare value: no spaces or quotes that would break the key=value format."""
    token = _tokens.get(text)
    if token is None:
        token = text
        if len(text.translate(None, b' "')) != len(text):
            token = text.replace(b" ", b"%20").replace(b'"', b"%22")
        if len(_tokens) > 4096:
            _tokens.clear()
        _tokens[text] = token
    return token


def _ms(seconds: float | None) -> bytes:
    if seconds is None:
        return b""
    return b"%dms" % (seconds * 1000 + 0.5)


_INFO_MS = (
    b'at=info method=%s path="%s" host=%s request_id=%s fwd="%s" dyno=%s connect=%dms '
    b"service=%dms status=%d bytes=%d protocol=http"
)
_INFO = (
    b'at=info method=%s path="%s" host=%s request_id=%s fwd="%s" dyno=%s connect=%s '
    b"service=%s status=%d bytes=%s protocol=http"
)
_ERROR = (
    b'at=%s code=%s desc="%s" method=%s path="%s" host=%s request_id=%s fwd="%s" dyno=%s '
    b"connect=%s service=%s status=%d bytes=%s protocol=http"
)


INFO_FIELDS = 10  # the values of one info line in a batch, in the order of _INFO_MS
_INFO_ROW = b"\n" + _INFO_MS


def info_lines(rows: list[bytes | int | float]) -> str:
    """info_line for a batch of requests, `rows` their values one after the other (method,
    path, host, request_id, fwd, dyno, connect and service in ms (+0.5, floored here), status,
    bytes): a line each, newline-separated. One format and one decode for the batch, and the
    escaping checked once for all its paths, Hosts and fwd values: a third of the cost of a
    line at a time (see docs/performance.md)."""
    values = tuple(rows)
    quoted = values[1::INFO_FIELDS] + values[4::INFO_FIELDS]  # paths and fwd values
    text = b"".join(quoted)  # type: ignore[arg-type]
    if len(text.translate(None, b'"\\')) != len(text):
        escaped = list(values)
        escaped[1::INFO_FIELDS] = map(quote, values[1::INFO_FIELDS])  # type: ignore[arg-type]
        escaped[4::INFO_FIELDS] = map(quote, values[4::INFO_FIELDS])  # type: ignore[arg-type]
        values = tuple(escaped)
    text = b"".join(values[2::INFO_FIELDS])  # type: ignore[arg-type]  # the Hosts
    if len(text.translate(None, b' "')) != len(text):
        escaped = list(values)
        escaped[2::INFO_FIELDS] = map(_token, values[2::INFO_FIELDS])  # type: ignore[arg-type]
        values = tuple(escaped)
    return ((_INFO_ROW * (len(values) // INFO_FIELDS)) % values)[1:].decode("latin-1")


def info_line(
    method: bytes,
    path: bytes,
    host: bytes,
    request_id: bytes,
    fwd: bytes,
    status: int,
    dyno: bytes,
    connect: float,
    service: float,
    sent: int,
) -> str:
    """router_line for a request a dyno answered, the router's most frequent line: `fwd` is
    to be quote()d by the caller when it may hold quotes (a client's X-Forwarded-For)."""
    return (
        _INFO_MS
        % (
            method,
            quote(path),
            _token(host),
            request_id,
            fwd,
            dyno,
            connect * 1000 + 0.5,
            service * 1000 + 0.5,
            status,
            sent,
        )
    ).decode("latin-1")


def router_line(
    method: bytes,
    path: bytes,
    host: bytes,
    request_id: bytes,
    fwd: bytes,
    status: int,
    dyno: bytes = b"",
    connect: float | None = None,
    service: float | None = None,
    sent: int | None = None,
    code: Code | None = None,
) -> str:
    """The line from the request's bytes as they came (formatted as bytes, decoded once).
    `method` is a token and `request_id` a sane id (the client's or the router's): neither
    needs escaping."""
    fields = (
        method,
        quote(path),
        _token(host),
        request_id,
        quote(fwd),
        dyno,
        b"0ms" if connect == 0.0 else _ms(connect),
        _ms(service),
        status,
        b"" if sent is None else b"%d" % sent,
    )
    if code is None:
        return (_INFO % fields).decode("latin-1")
    return (_ERROR % (code.at.encode(), code.code.encode(), code.desc.encode(), *fields)).decode(
        "latin-1"
    )
