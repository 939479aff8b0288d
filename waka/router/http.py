"""HTTP/1.1 message heads as a proxy needs them (RFC 9110/9112): parse, check, rewrite.

Heads are bytes end to end: header lines a proxy does not care about are forwarded as they
came, and only the few it acts on (framing, Connection, Host, X-Forwarded-*) are looked at.
A head here is its lines, each with its CRLF, without the blank line that ends it.

The work per head is a few passes of the regex engine (C) over it, not a Python loop over its
lines: this parsing is a good part of the router's cost per request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Heroku's router takes a request line and header lines of up to 8 KB each (8192 bytes, as
# Apache, nginx and AWS's load balancers do); a whole head is bounded too.
MAX_REQUEST_LINE = 8192  # beyond it: 414 URI Too Long
MAX_FIELD_LINE = 8192  # beyond it: 431 Request Header Fields Too Large
MAX_HEAD = 64 * 1024  # request or response head, like nginx's large_client_header_buffers
MAX_CHUNK_LINE = 4096

CHUNKED = -1  # body framing: Transfer-Encoding: chunked
UNTIL_CLOSE = -2  # response body delimited by the backend closing the connection

_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"  # RFC 9110 5.6.2: what a method or field name is made of
# Field lines, each `token:value CRLF`. CR or LF alone, NUL, obs-fold and names with spaces
# are refused: a dyno or client could read them differently from this proxy (request
# smuggling, response splitting). A whole head is checked in one pass of the regex engine.
_FIELD_LINES = rb"(?:%s+:[^\r\n\x00]*\r\n)*+" % _TCHAR
_REQUEST_LINE = re.compile(rb"(%s+) ([^\x00-\x20\x7f]+) HTTP/(\d)\.(\d)\r\n" % _TCHAR)
_REQUEST_HEAD = re.compile(_REQUEST_LINE.pattern + _FIELD_LINES)
_OTHER_VERSION = re.compile(rb"%s+ [^\x00-\x20\x7f]+ HTTP/[0-9.]+\r\n" % _TCHAR)
_RESPONSE_HEAD = re.compile(rb"(HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n\x00]*)?\r\n)" + _FIELD_LINES)
# The fields the proxy acts on, found in the lower-cased head (a line is "\n<name>:…\r").
_REQUEST_FIELDS = re.compile(
    rb"\n(host|content-length|transfer-encoding|connection|upgrade|expect|x-forwarded-for|"
    rb"x-request-id|keep-alive|proxy-connection|te|trailer|proxy-authenticate|"
    rb"proxy-authorization|x-forwarded-proto|x-forwarded-port|x-request-start):"
    rb"[ \t]*([^\r]*?)[ \t]*\r"
)
_RESPONSE_FIELDS = re.compile(
    rb"\n(content-length|transfer-encoding|connection|upgrade|keep-alive|proxy-connection|te|"
    rb"trailer|proxy-authenticate|proxy-authorization):[ \t]*([^\r]*?)[ \t]*\r"
)
# Fields that send a head down the full parse (one search: much cheaper than a test per name).
_RARE_REQUEST_FIELDS = re.compile(
    rb"\n(?:x-forwarded-|x-request-|transfer-encoding:|upgrade:|expect:|keep-alive:|proxy-|te:|"
    rb"trailer:)"
)
_RARE_RESPONSE_FIELDS = re.compile(
    rb"\n(?:transfer-encoding|upgrade|keep-alive|proxy-[a-z]*|te|trailer):"
)
# The commonest heads, parsed by one regex match: none of the fields the router acts on but
# Host (a request), or Content-Length and Connection (a response), each at most once.
# `(?!(?i:names):)` keeps a plain field line from being one of those.
_REQUEST_NAMES = _REQUEST_FIELDS.pattern[3 : _REQUEST_FIELDS.pattern.index(b"):")]
_RESPONSE_NAMES = _RESPONSE_FIELDS.pattern[3 : _RESPONSE_FIELDS.pattern.index(b"):")]
_PLAIN_REQUEST = rb"(?:(?!(?i:%s):)%s+:[^\r\n\x00]*\r\n)*+" % (_REQUEST_NAMES, _TCHAR)
_PLAIN_RESPONSE = rb"(?:(?!(?i:%s):)%s+:[^\r\n\x00]*\r\n)*+" % (_RESPONSE_NAMES, _TCHAR)
_HOST = rb"(?i:host):[ \t]*([^\r\n\x00]*?)[ \t]*\r\n"
_CONNECTION = rb"(?i:connection):[ \t]*((?i:keep-alive|close))[ \t]*\r\n"
_LENGTH = rb"(?i:content-length):[ \t]*([0-9]{1,18})[ \t]*\r\n"
# Groups: method, target, minor version, Host, the Connection line, its option.
_SIMPLE_REQUEST = re.compile(
    b"".join(
        (
            rb"(%s+) (/[^\x00-\x20\x7f]*) HTTP/1\.([0-9])\r\n" % _TCHAR,
            _PLAIN_REQUEST,
            _HOST,
            _PLAIN_REQUEST,
            rb"(?:(%s)%s)?" % (_CONNECTION, _PLAIN_REQUEST),
        )
    )
)
# Groups: status line, minor version, status; then Content-Length, the Connection line, its
# option when Content-Length comes first, else the Connection line, option, Content-Length.
_SIMPLE_RESPONSE = re.compile(
    b"".join(
        (
            rb"(HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n\x00]*)?\r\n)",
            _PLAIN_RESPONSE,
            rb"(?:%s%s(?:(%s)%s)?" % (_LENGTH, _PLAIN_RESPONSE, _CONNECTION, _PLAIN_RESPONSE),
            rb"|(%s)%s(?:%s%s)?)?" % (_CONNECTION, _PLAIN_RESPONSE, _LENGTH, _PLAIN_RESPONSE),
        )
    )
)
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9+/=-]{20,200}")  # Heroku's rule for X-Request-Id
_NOT_LISTABLE = {b"close", b"keep-alive", b"upgrade"}  # Connection options, not field names
# A chunk's size line (RFC 9112 7.1.1): hex digits, then extensions, with blanks only before
# their ";". At most 15 digits: a size has to fit an int64 for every parser down the line.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[^\r\n\x00]*)?")
_TRAILER_LINE = re.compile(rb"%s+:[^\r\n\x00]*" % _TCHAR)


class BadMessage(Exception):
    """A head that cannot be proxied safely; `status` is what to answer a client with."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def _without(head: bytes, start: int, spans: list[tuple[int, int]]) -> bytes:
    """head[start:] less the given line spans."""
    if not spans:
        return head[start:]
    parts = []
    for begin, end in spans:
        parts.append(head[start:begin])
        start = end
    parts.append(head[start:])
    return b"".join(parts)


def _drop_listed(fields: bytes, listed: list[bytes]) -> bytes:
    """Fields named in Connection are hop-by-hop too (RFC 9110 7.6.1)."""
    names = set(listed) - _NOT_LISTABLE
    if not names or not fields:
        return fields
    lines = fields.split(b"\r\n")[:-1]
    kept = [ln for ln in lines if ln.partition(b":")[0].lower() not in names]
    return b"".join(ln + b"\r\n" for ln in kept)


def _tokens(value: bytes) -> list[bytes]:
    """A lower-cased comma-separated list."""
    if b"," not in value:
        return [value.strip(b" \t")] if value else []
    return [t.strip(b" \t") for t in value.split(b",") if t.strip(b" \t")]


def _content_length(values: list[bytes]) -> int:
    value = values[0]
    if (len(values) > 1 and len(set(values)) != 1) or not value.isdigit() or len(value) > 18:
        raise BadMessage("bad Content-Length")
    return int(value)


# A Host value (RFC 9110 7.2: uri-host [":" port]); empty is allowed (RFC 9112 3.2).
_VALID_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]{0,5})?|")


def valid_host(host: bytes) -> bool:
    """Whether a Host value is one (spaces, slashes, "@" or a second ":" make it not). Asked
    once per new Host value (the route table remembers its answers), so that no app is found
    through a malformed Host, and a wrong Host is told apart (400) from an unknown one (404)."""
    return _VALID_HOST.fullmatch(host) is not None


def oversized(head: bytes | bytearray, complete: bool = True) -> int:
    """The status answering a request head over the limits above (414 or 431), else 0.
    `head` may be the start of one that is not `complete` yet: then only its request line
    and its size are judged. Only heads longer than MAX_REQUEST_LINE need asking, so the
    common small head never comes here."""
    if head.find(b"\r\n", 0, MAX_REQUEST_LINE + 2) < 0:
        if complete or len(head) - (head[-1:] == b"\r") > MAX_REQUEST_LINE:
            return 414
        return 0
    if len(head) > MAX_HEAD:
        return 431
    if complete and max(map(len, head.split(b"\n"))) > MAX_FIELD_LINE + 1:  # (+1: its CR)
        return 431
    return 0


@dataclass(slots=True)
class Request:
    method: bytes
    target: bytes  # origin-form ("/path?query") as sent on to the dyno
    http10: bool
    host: bytes = b""
    fields: bytes = b""  # end-to-end field lines as they came, each with its CRLF
    body: int = 0  # bytes of body, or CHUNKED
    keep_alive: bool = True
    upgrade: bytes | None = None  # the Upgrade value when the client asks to switch protocols
    expect_continue: bool = False
    forwarded_for: bytes = b""  # the client's X-Forwarded-For, if any
    request_id: bytes = b""  # the client's X-Request-Id when sane, else b""


def simple_request_re(head: bytes) -> tuple[bytes, bytes, bool, bytes, int, int, int, int] | None:
    """_SIMPLE_REQUEST's answer: (method, target, http10, host, where the field lines start,
    the Connection line's start and end and its option: 1 keep-alive, 0 close; -1 for none)."""
    simple = _SIMPLE_REQUEST.fullmatch(head)
    if simple is None:
        return None
    method, target, minor, host, line, option = simple.groups()
    start = simple.end(3) + 2
    if line is None:
        return method, target, minor == b"0", host, start, -1, -1, -1
    keep = int(option.lower() == b"keep-alive")
    return method, target, minor == b"0", host, start, simple.start(5), simple.end(5), keep


def simple_response_re(head: bytes) -> tuple[int, bool, int, int, int, int, int] | None:
    """_SIMPLE_RESPONSE's answer: (where the field lines start, HTTP/1.1, status,
    Content-Length or -1, the Connection line's start and end and its option as above)."""
    simple = _SIMPLE_RESPONSE.fullmatch(head)
    if simple is None:
        return None
    _, minor, code, length, line1, option1, _, option2, length2 = simple.groups()
    number = length or length2
    option = option1 or option2
    if option is None:
        return simple.end(1), minor == b"1", int(code), int(number or -1), -1, -1, -1
    group = 5 if line1 is not None else 7  # the Connection line
    keep = int(option.lower() == b"keep-alive")
    at, end = simple.span(group)
    return simple.end(1), minor == b"1", int(code), int(number or -1), at, end, keep


def take_request_py(
    buf: bytearray, scanned: int, limit: int
) -> tuple[bytes, bytes, bool, bytes, bytes, int, bool] | bool | None:
    """The commonest request out of a client connection's buffer, as the router's callbacks
    serve it: False when no head has ended in `buf` (searched from `scanned`); None when the
    head that has is longer than `limit` or not _SIMPLE_REQUEST's (`buf` untouched: the full
    path reads it); else Request's first fields (method, target, http10, host, fields, body,
    keep_alive), the head taken from `buf`."""
    end = buf.find(b"\r\n\r\n", scanned)
    if end < 0:
        return False
    if end + 2 > limit:
        return None
    head = bytes(buf[: end + 2])
    simple = simple_request_re(head)
    if simple is None:
        return None
    method, target, http10, host, start, at, after, option = simple
    del buf[: end + 4]
    if at < 0:
        return method, target, http10, host, head[start:], 0, not http10
    return method, target, http10, host, head[start:at] + head[after:], 0, option == 1


def relay_response_py(
    buf: bytearray, head_request: bool, keep: bool, limit: int
) -> tuple[int, bytes, bool] | None:
    """A whole common response out of a dyno connection's buffer, as the router's callbacks
    relay it to an HTTP/1.1 client: None unless `buf` (at most `limit` bytes) holds a
    _SIMPLE_RESPONSE head of a final status (2xx-5xx) and all of its body by Content-Length
    (`buf` then untouched: the full path reads it); else (status, what the client gets, may
    the dyno connection be reused), the response taken from `buf`. `keep`: the client's
    connection goes on (else the router adds Connection: close)."""
    if len(buf) > limit:
        return None
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[: end + 2])
    simple = simple_response_re(head)
    if simple is None or simple[2] < 200:
        return None
    start, http11, status, length, at, after, option = simple
    if head_request or status in (204, 304):
        length = 0
    elif length < 0 or len(buf) - end - 4 < length:
        return None  # ended by the dyno's close, or not all here yet: streamed
    fields = head[start:] if at < 0 else head[start:at] + head[after:]
    out = head[:start] if http11 else b"HTTP/1.1" + head[8:start]
    out += fields + (b"\r\n" if keep else b"Connection: close\r\n\r\n")
    out += buf[end + 4 : end + 4 + length]
    del buf[: end + 4 + length]
    return status, out, http11 if at < 0 else option == 1


try:  # the same answers from one scan in C (waka/router/_heads.c), when it was built
    from waka.router._heads import relay_response, simple_request, simple_response, take_request
except ImportError:  # no C compiler at install time: the regexes
    simple_request, simple_response = simple_request_re, simple_response_re
    take_request, relay_response = take_request_py, relay_response_py


def parse_request(head: bytes) -> Request:
    simple = simple_request(head)
    if simple is not None:  # one Host, maybe a Connection after it, nothing else to act on
        method, target, http10, host, start, at, end, option = simple
        if at < 0:
            return Request(method, target, http10, host, head[start:], keep_alive=not http10)
        req = Request(method, target, http10, host, keep_alive=option == 1)
        req.fields = head[start:at] + head[end:]
        return req
    line = _REQUEST_HEAD.fullmatch(head)
    if line is None:
        line = _REQUEST_LINE.match(head)
        if line is not None:
            raise BadMessage("malformed header line")
        if _OTHER_VERSION.match(head):
            raise BadMessage("HTTP version not supported", 505)
        raise BadMessage("malformed request line")
    start = line.end(4) + 2
    low = head.lower()
    method, target, major, minor = line.groups()
    # The usual request: at most one Host, Content-Length and Connection (with close or
    # keep-alive) among the fields the router acts on. Anything else takes the full path.
    if major != b"1" or target[:1] != b"/" or _RARE_REQUEST_FIELDS.search(low, start - 1):
        return _parse_request(head, line, low)
    at = low.find(b"\nhost:", start - 1)
    if at < 0 or low.find(b"\nhost:", at + 6) >= 0:
        return _parse_request(head, line, low)
    http10 = minor == b"0"
    req = Request(method, target, http10, head[at + 6 : low.find(b"\r", at)].strip(b" \t"))
    at = low.find(b"\ncontent-length:", start - 1)
    if at >= 0:
        if low.find(b"\ncontent-length:", at + 16) >= 0:
            return _parse_request(head, line, low)
        req.body = _content_length([low[at + 16 : low.find(b"\r", at)].strip(b" \t")])
    at = low.find(b"\nconnection:", start - 1)
    if at < 0:
        req.keep_alive = not http10
        req.fields = head[start:]
        return req
    end = low.find(b"\r", at)
    option = low[at + 12 : end].strip(b" \t")
    if option == b"keep-alive":
        req.keep_alive = True
    elif option == b"close":
        req.keep_alive = False
    else:
        return _parse_request(head, line, low)
    if low.find(b"\nconnection:", end) >= 0:
        return _parse_request(head, line, low)
    req.fields = head[start : at + 1] + head[end + 2 :]
    return req


def _parse_request(head: bytes, line: re.Match[bytes], low: bytes) -> Request:
    """parse_request's full path: any field the router acts on, checked and handled."""
    method, target, major, minor = line.groups()
    if major != b"1":  # (a later 1.x is read as 1.1: RFC 9112 2.3)
        raise BadMessage("HTTP version not supported", 505)
    start = line.end(4) + 2
    http10 = minor == b"0"
    req = Request(method, target, http10)
    hosts: list[bytes] = []
    lengths: list[bytes] = []
    chunked = False
    connection: list[bytes] = []
    upgrade = b""
    drop: list[tuple[int, int]] = []
    for match in _REQUEST_FIELDS.finditer(low, start - 1):
        name = match[1]
        if name == b"host":
            hosts.append(head[match.start(2) : match.end(2)])
            continue
        if name == b"content-length":
            lengths.append(match[2])  # forwarded as it came, once checked
            continue
        if name == b"expect" and match[2] != b"100-continue":
            continue
        drop.append((match.start() + 1, match.end() + 1))  # the whole line, CRLF included
        if name == b"transfer-encoding":
            codings = _tokens(match[2])
            if not codings or codings[-1] != b"chunked" or chunked:
                raise BadMessage("bad Transfer-Encoding")
            chunked = True
        elif name == b"connection":
            connection += _tokens(match[2])
        elif name == b"upgrade":
            upgrade = head[match.start(2) : match.end(2)]
        elif name == b"x-forwarded-for":
            value = head[match.start(2) : match.end(2)]
            req.forwarded_for += b", " + value if req.forwarded_for else value
        elif name == b"x-request-id":
            value = head[match.start(2) : match.end(2)]
            req.request_id = value if _SANE_REQUEST_ID.fullmatch(value) else b""
        elif name == b"expect":
            req.expect_continue = True  # the router answers it: see proxy.py
        # other hop-by-hop fields and the X-Forwarded-* the router sets are dropped
    fields = _without(head, start, drop)
    if target[:1] != b"/":
        target, host = _origin_form(method, target)
        if host:  # RFC 9112 3.2.2: the absolute-form's authority replaces Host
            fields = _drop_listed(fields, [b"host"]) + b"Host: " + host + b"\r\n"
            hosts = [host]
        req.target = target
    if len(hosts) != 1:
        if hosts or not http10:
            raise BadMessage("missing or repeated Host")
    else:
        req.host = hosts[0]
    if chunked:
        if lengths or http10:
            raise BadMessage("ambiguous body framing")
        req.body = CHUNKED
    elif lengths:
        req.body = _content_length(lengths)
    if connection:
        if http10:
            req.keep_alive = b"keep-alive" in connection
        else:
            req.keep_alive = b"close" not in connection
        if b"upgrade" in connection and upgrade:
            req.upgrade = upgrade
        fields = _drop_listed(fields, connection)
    elif http10:
        req.keep_alive = False
    req.fields = fields
    return req


def _origin_form(method: bytes, target: bytes) -> tuple[bytes, bytes]:
    """Absolute-form ("http://host/path") -> ("/path", host); "*" for OPTIONS stays."""
    if target == b"*" and method == b"OPTIONS":
        return target, b""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https") or not rest:
        raise BadMessage("malformed request target")
    host, slash, path = rest.partition(b"/")
    if not host:
        raise BadMessage("malformed request target")
    return slash + path if slash else b"/", host


@dataclass(slots=True)
class Response:
    status: int
    status_line: bytes  # as the router sends it on: "HTTP/1.1 200 OK\r\n"
    fields: bytes = b""  # end-to-end field lines, each with its CRLF
    body: int = UNTIL_CLOSE  # bytes of body, CHUNKED or UNTIL_CLOSE
    keep_alive: bool = True  # may the router reuse the connection to the dyno
    transfer_encoding: bytes = b""  # as the dyno sent it, forwarded with a chunked body
    upgrade: bytes = b""


def parse_response(head: bytes, method: bytes) -> Response:
    """A dyno's response head; raises BadMessage (H17) when it cannot be relayed safely."""
    simple = simple_response(head)
    if simple is not None:  # at most a Content-Length and a Connection to act on
        start, http11, status, length, at, end, option = simple
        resp = Response(status, head[:start] if http11 else b"HTTP/1.1" + head[8:start])
        if at < 0:
            resp.keep_alive = http11
            resp.fields = head[start:]
        else:  # the Connection line is not forwarded
            resp.keep_alive = option == 1
            resp.fields = head[start:at] + head[end:]
        if method == b"HEAD" or status < 200 or status in (204, 304):
            resp.body = 0
        elif length >= 0:
            resp.body = length
        else:
            resp.keep_alive = False  # the body ends when the dyno closes the connection
        return resp
    line = _RESPONSE_HEAD.fullmatch(head)
    if line is None:
        raise BadMessage("malformed response head")
    start = line.end(1)
    low = head.lower()
    # The usual response: at most one Content-Length and one Connection (close or keep-alive)
    # among the fields the router acts on. Anything else takes the full path.
    if _RARE_RESPONSE_FIELDS.search(low, start - 1):
        return _parse_response(head, method, line, low)
    _, minor, code = line.groups()
    status = int(code)
    resp = Response(status, head[:start] if minor == b"1" else b"HTTP/1.1" + head[8:start])
    at = low.find(b"\nconnection:", start - 1)
    if at >= 0:
        end = low.find(b"\r", at)
        option = low[at + 12 : end].strip(b" \t")
        if option == b"keep-alive":
            resp.keep_alive = True
        elif option == b"close":
            resp.keep_alive = False
        else:
            return _parse_response(head, method, line, low)
        if low.find(b"\nconnection:", end) >= 0:
            return _parse_response(head, method, line, low)
        resp.fields = head[start : at + 1] + head[end + 2 :]
    else:
        resp.keep_alive = minor == b"1"
        resp.fields = head[start:]
    if method == b"HEAD" or status < 200 or status in (204, 304):
        resp.body = 0
        return resp
    at = low.find(b"\ncontent-length:", start - 1)
    if at < 0:
        resp.keep_alive = False  # the body ends when the dyno closes the connection
        return resp
    if low.find(b"\ncontent-length:", at + 16) >= 0:
        return _parse_response(head, method, line, low)
    try:
        resp.body = _content_length([low[at + 16 : low.find(b"\r", at)].strip(b" \t")])
    except BadMessage:
        raise BadMessage("bad Content-Length in response") from None
    return resp


def _parse_response(head: bytes, method: bytes, line: re.Match[bytes], low: bytes) -> Response:
    """parse_response's full path: any field the router acts on, checked and handled."""
    start = line.end(1)
    _, minor, code = line.groups()
    resp = Response(int(code), head[:start] if minor == b"1" else b"HTTP/1.1" + head[8:start])
    lengths: list[bytes] = []
    length_spans: list[tuple[int, int]] = []
    coding = b""
    connection: list[bytes] = []
    drop: list[tuple[int, int]] = []
    for match in _RESPONSE_FIELDS.finditer(low, start - 1):
        name = match[1]
        span = (match.start() + 1, match.end() + 1)  # the whole line, CRLF included
        if name == b"content-length":
            lengths.append(match[2])
            length_spans.append(span)
            continue
        drop.append(span)
        if name == b"transfer-encoding":
            coding = match[2]
        elif name == b"connection":
            connection += _tokens(match[2])
        elif name == b"upgrade":
            resp.upgrade = head[match.start(2) : match.end(2)]
    status = resp.status
    if minor == b"0":
        resp.keep_alive = b"keep-alive" in connection
    else:
        resp.keep_alive = b"close" not in connection
    if method == b"HEAD" or status < 200 or status in (204, 304):
        resp.body = 0
    elif coding:
        drop = sorted(drop + length_spans)  # RFC 9112 6.3: Transfer-Encoding overrides it
        if _tokens(coding)[-1:] == [b"chunked"]:
            resp.body, resp.transfer_encoding = CHUNKED, coding
        else:
            resp.body = UNTIL_CLOSE  # a final coding other than chunked
    elif lengths:
        try:
            resp.body = _content_length(lengths)
        except BadMessage:
            raise BadMessage("bad Content-Length in response") from None
    if resp.body == UNTIL_CLOSE:
        resp.keep_alive = False
    fields = _without(head, start, drop)
    resp.fields = _drop_listed(fields, connection) if connection else fields
    return resp


class ChunkedScanner:
    """Finds where a chunked body ends, so it can be forwarded as it came (decode=False) or
    with its framing removed for an HTTP/1.0 client (decode=True).

    Strict (RFC 9112 7.1): a size line is hex digits and maybe extensions, each chunk is
    followed by CRLF, trailer lines are field lines. Whatever a dyno's parser might read
    differently (a bare LF, spaces in a size, a missing CRLF) is refused: the body is forwarded
    as it came, so a lenient reading here would let a request hide inside another's body."""

    __slots__ = ("_data", "_decode", "_state", "done")

    def __init__(self, decode: bool = False) -> None:
        self._decode = decode
        self._state = 0  # 0: size line, 1: data, 2: trailer lines, 3: the CRLF after data
        self._data = 0  # bytes left in the current chunk (state 1) or of its CRLF (state 3)
        self.done = False

    def scan(self, buf: bytearray, out: list[bytes]) -> int:
        """How many leading bytes of `buf` belong to the body (appends the payload to `out`
        when decoding); sets `done` at its end. Raises BadMessage on broken framing."""
        pos, end = 0, len(buf)
        while pos < end and not self.done:
            state = self._state
            if state == 1:
                take = min(self._data, end - pos)
                if self._decode:
                    out.append(bytes(buf[pos : pos + take]))
                pos += take
                self._data -= take
                if not self._data:
                    self._state, self._data = 3, 2
                continue
            if state == 3:  # the CRLF may come split over two reads: checked a byte at a time
                expected = b"\r\n"[2 - self._data :]
                take = min(self._data, end - pos)
                if buf[pos : pos + take] != expected[:take]:
                    raise BadMessage("chunk not followed by CRLF")
                pos += take
                self._data -= take
                if not self._data:
                    self._state = 0
                continue
            eol = buf.find(b"\r\n", pos, pos + MAX_CHUNK_LINE)
            if eol < 0:
                if end - pos >= MAX_CHUNK_LINE:
                    raise BadMessage("chunk line too long")
                break  # wait for the rest of the line
            line = bytes(buf[pos:eol])
            pos = eol + 2
            if state == 2:
                if not line:  # the blank line after the trailer fields ends the body
                    self.done = True
                elif _TRAILER_LINE.fullmatch(line) is None:
                    raise BadMessage("bad trailer field")
                continue
            size = _CHUNK_SIZE.fullmatch(line)
            if size is None:
                raise BadMessage("bad chunk size")
            n = int(size[1], 16)
            if n:
                self._state, self._data = 1, n
            else:
                self._state = 2
        return pos
