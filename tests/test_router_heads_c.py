"""The router's C scan of its commonest heads (waka/router/_heads.c) answers exactly as the
regexes it stands in for: on the heads the router meets, on heads broken at each byte, and
on many random ones built from the pieces that matter (the names the router acts on in any
case, blanks, CR, LF, NUL, long numbers). Then parse_request/parse_response give the same
Request, Response or error with either. Its take_request and relay_response, which take a
whole message out of a connection's buffer, answer and leave the buffer as their Python
references do, and those as the full parse does.

Skipped when the module was not built (no C compiler at install), except under CI, where it
fails: the router's figures in docs/performance.md are taken with it."""

from __future__ import annotations

import os
import random

import pytest

from waka.router import http
from waka.router.http import (
    BadMessage,
    Request,
    parse_request,
    parse_response,
    relay_response_py,
    simple_request_re,
    simple_response_re,
    take_request_py,
)

try:
    from waka.router import _heads
except ImportError:  # pragma: no cover - depends on the install
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off"):
        raise
    pytest.skip("waka.router._heads was not built (no C compiler?)", allow_module_level=True)

SEED = int(os.environ.get("WAKA_HEADS_SEED") or random.randrange(2**32))
CASES = 20_000

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: bench.localhost\r\n",
    b"GET /some/path?x=1 HTTP/1.1\r\nHost: bench.localhost\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.9\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nCookie: session=abcdef0123456789; theme=dark\r\n"
    b"Connection: keep-alive\r\n",
    b"POST /form HTTP/1.0\r\nhOsT:  a.localhost \t\r\nContent-Length: 5\r\n",
    b"GET /\xc3\xa9 HTTP/1.0\r\nX-A: 1\r\nHost:\r\nCONNECTION: Close\r\nX-B:\r\n",
    b"GET / HTTP/1.1\r\nConnection: close\r\nHost: a\r\n",
    b"GET http://a/b HTTP/1.1\r\nHost: a\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nhostname: b\r\ntea: c\r\nte-x: d\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 128\r\n"
    b"Last-Modified: Mon, 30 Nov 2026 11:00:00 GMT\r\nConnection: keep-alive\r\n",
    b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nAccess-Control-Allow-Origin: *\r\n"
    b"Content-Type: application/json; charset=utf-8\r\nContent-Length: 1234\r\n"
    b"Connection: keep-alive\r\nVary: Accept-Encoding\r\n",
    b"HTTP/1.0 404\r\nconnection:CLOSE\r\ncontent-length: 000000000000000012\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n",
    b"HTTP/1.1 200 \r\nConnection: keep-alive\r\nX: y\r\nContent-Length: 0 \r\n",
    b"HTTP/1.2 200 OK\r\n",
]
# What a random line is made of: names the router acts on (and near misses) in any case,
# values with blanks, options and numbers of every length, and the bytes that break lines.
NAMES = [
    b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect",
    b"x-forwarded-for", b"x-request-id", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"proxy-authenticate", b"proxy-authorization", b"x-forwarded-proto", b"x-forwarded-port",
    b"x-request-start", b"hosts", b"t", b"tee", b"content-lengt", b"x-a", b"accept", b"",
    b"bad name", b"na\x00me",
]  # fmt: skip
VALUES = [
    b"", b" ", b"\t", b"a", b" a.localhost ", b"keep-alive", b"close", b" Keep-Alive\t",
    b"close, keep-alive", b"0", b"12", b"123456789012345678", b"1234567890123456789", b"-1",
    b"1 2", b"a\x00b", b"a\rb", b"a\nb", b"\xff\xfe", b"websocket", b"chunked",
]  # fmt: skip
STATUS_LINES = [
    b"HTTP/1.1 200 OK", b"HTTP/1.0 304", b"HTTP/1.1 200 ", b"HTTP/1.1 20", b"HTTP/1.2 200 OK",
    b"HTTP/1.1 999 \x00", b"HTTP/1.1 100 Continue", b"http/1.1 200 OK",
]  # fmt: skip
BREAKS = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b"/", b"\x7f", b"A", b"1", b"\r\n"]


def case(rng: random.Random, name: bytes) -> bytes:
    return bytes(c ^ 32 if 97 <= c <= 122 and rng.random() < 0.3 else c for c in name)


def random_lines(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randrange(0, 6)):
        name = case(rng, rng.choice(NAMES))
        sep = b":" if rng.random() < 0.95 else rng.choice([b"", b" :"])
        end = b"\r\n" if rng.random() < 0.95 else rng.choice([b"\n", b"\r", b""])
        lines.append(name + sep + rng.choice(VALUES) + end)
    return b"".join(lines)


def random_request(rng: random.Random) -> bytes:
    method = rng.choice([b"GET", b"POST", b"G\x00T", b"", b"M-SEARCH"])
    target = rng.choice([b"/", b"/a?b=c", b"*", b"http://a/", b"/a b", b"/\x7f", b"/\x80"])
    version = rng.choice(
        [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.9", b"HTTP/2.0", b"HTTP/1.", b"http/1.1"]
    )
    head = b"%s %s %s\r\n" % (method, target, version) + random_lines(rng)
    if rng.random() < 0.5:
        head += b"Host: " + rng.choice(VALUES) + b"\r\n" + random_lines(rng)
    return mutate(rng, head) if rng.random() < 0.3 else head


def random_response(rng: random.Random) -> bytes:
    line = rng.choice(STATUS_LINES)
    head = line + b"\r\n" + random_lines(rng)
    return mutate(rng, head) if rng.random() < 0.3 else head


def mutate(rng: random.Random, head: bytes) -> bytes:
    data = bytearray(head)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(data) + 1)
        what = rng.random()
        if what < 0.4 and at < len(data):
            del data[at]
        elif what < 0.7:
            data[at:at] = rng.choice(BREAKS)
        elif at < len(data):
            data[at] = rng.randrange(256)
    return bytes(data)


def every_cut_and_break(head: bytes):
    """The head cut short at each byte, and with each byte replaced by a line breaker."""
    for at in range(len(head) + 1):
        yield head[:at]
        for byte in (b"\r", b"\n", b"\x00", b" "):
            yield head[:at] + byte + head[at + 1 :]


def test_the_c_scan_answers_as_the_regexes_on_real_and_broken_heads() -> None:
    for head in REQUESTS:
        for variant in every_cut_and_break(head):
            assert _heads.simple_request(variant) == simple_request_re(variant), variant
    for head in RESPONSES:
        for variant in every_cut_and_break(head):
            assert _heads.simple_response(variant) == simple_response_re(variant), variant
    taken = [h for h in REQUESTS if simple_request_re(h) is not None]
    assert len(taken) >= 4  # the corpus exercises the scan, not only its refusals
    assert sum(simple_response_re(h) is not None for h in RESPONSES) >= 5


def test_the_c_scan_answers_as_the_regexes_on_random_heads() -> None:
    rng = random.Random(SEED)
    taken = 0
    for _ in range(CASES):
        head = random_request(rng)
        want = simple_request_re(head)
        assert _heads.simple_request(head) == want, (SEED, head)
        taken += want is not None
        head = random_response(rng)
        want = simple_response_re(head)
        assert _heads.simple_response(head) == want, (SEED, head)
        taken += want is not None
    assert taken > CASES // 20, (SEED, taken)  # not only refusals


def outcome(parse, *args):  # type: ignore[no-untyped-def]
    try:
        return parse(*args)
    except BadMessage as error:
        return ("BadMessage", str(error), error.status)


def test_parsing_gives_the_same_requests_and_responses_either_way(monkeypatch) -> None:
    rng = random.Random(SEED + 1)
    requests = [*REQUESTS, *(random_request(rng) for _ in range(3000))]
    responses = [*RESPONSES, *(random_response(rng) for _ in range(3000))]
    methods = [b"GET", b"HEAD"]
    with_c = [outcome(http.parse_request, h) for h in requests]
    with_c += [outcome(http.parse_response, h, m) for h in responses for m in methods]
    monkeypatch.setattr(http, "simple_request", simple_request_re)
    monkeypatch.setattr(http, "simple_response", simple_response_re)
    with_re = [outcome(http.parse_request, h) for h in requests]
    with_re += [outcome(http.parse_response, h, m) for h in responses for m in methods]
    assert with_c == with_re, SEED


def test_the_router_uses_the_c_scan() -> None:
    assert http.simple_request is _heads.simple_request
    assert http.simple_response is _heads.simple_response
    assert http.take_request is _heads.take_request
    assert http.relay_response is _heads.relay_response
    with pytest.raises(TypeError):
        _heads.simple_request("GET / HTTP/1.1\r\n")  # type: ignore[arg-type]


# --- whole messages out of a connection's buffer ------------------------------------------------


def both(c_function, py_function, buf: bytes, *args):  # type: ignore[no-untyped-def]
    """Each function's answer (or error) on its own copy of `buf`, and that copy after."""
    answers = []
    for function in (c_function, py_function):
        copy = bytearray(buf)
        try:
            answer = function(copy, *args)
        except Exception as error:  # compared, not hidden
            answer = type(error).__name__
        answers.append((answer, bytes(copy)))
    return answers


def request_buffers(rng: random.Random):  # type: ignore[no-untyped-def]
    """Buffers as a client connection holds them: a head (ended, cut or broken), maybe more."""
    for head in REQUESTS:
        yield head + b"\r\n"
        yield head + b"\r\nGET / HTTP/1.1\r\nHost: next\r\n\r\n"
        yield head
        yield b"\r\n" + head + b"\r\n"
    for _ in range(CASES // 4):
        head = random_request(rng) if rng.random() < 0.8 else rng.choice(REQUESTS)
        yield head + rng.choice([b"\r\n", b"\r\n", b"", b"\n"]) + random_lines(rng)


def response_buffers(rng: random.Random):  # type: ignore[no-untyped-def]
    """Buffers as a dyno connection holds them: a head, maybe part or all of a body, more."""
    for head in RESPONSES:
        for body in (b"", b"x" * 12, b"x" * 128, b"x" * 1300):
            yield head + b"\r\n" + body
    for _ in range(CASES // 4):
        head = random_response(rng) if rng.random() < 0.8 else rng.choice(RESPONSES)
        head += rng.choice([b"\r\n", b"\r\n", b""])
        yield head + b"y" * rng.choice([0, 1, 11, 12, 13, 128, 200])


def test_take_request_answers_as_its_python_reference() -> None:
    rng = random.Random(SEED + 2)
    taken = 0
    for buf in request_buffers(rng):
        for scanned in {0, 1, len(buf) // 2, max(0, len(buf) - 3), len(buf), len(buf) + 5}:
            for limit in (8192, len(buf) - 3, len(buf) - 2, 10):
                c, py = both(_heads.take_request, take_request_py, buf, scanned, limit)
                assert c == py, (SEED, buf, scanned, limit)
                taken += isinstance(py[0], tuple)
    assert taken > 500, (SEED, taken)  # not only refusals


def test_relay_response_answers_as_its_python_reference() -> None:
    rng = random.Random(SEED + 3)
    relayed = 0
    for buf in response_buffers(rng):
        for head_request in (False, True):
            for keep in (True, False):
                for limit in (256 * 1024, len(buf), len(buf) - 1):
                    c, py = both(
                        _heads.relay_response, relay_response_py, buf, head_request, keep, limit
                    )
                    assert c == py, (SEED, buf, head_request, keep, limit)
                    relayed += isinstance(py[0], tuple)
    assert relayed > 500, (SEED, relayed)  # not only refusals


def test_the_references_answer_as_the_full_parse() -> None:
    """What take_request/relay_response hand the router is what parse_request/parse_response
    make of the same head, and the response goes out as the router's full path sends it."""
    rng = random.Random(SEED + 4)
    for buf in request_buffers(rng):
        answer = take_request_py(bytearray(buf), 0, 8192)
        if isinstance(answer, tuple):
            head = buf[: buf.find(b"\r\n\r\n") + 2]
            assert Request(*answer) == parse_request(head), (SEED, buf)
    for buf in response_buffers(rng):
        for method, keep in ((b"GET", True), (b"HEAD", False)):
            answer = relay_response_py(bytearray(buf), method == b"HEAD", keep, 256 * 1024)
            if answer is None:
                continue
            end = buf.find(b"\r\n\r\n")
            resp = parse_response(buf[: end + 2], method)
            body = buf[end + 4 : end + 4 + resp.body]
            ending = b"\r\n" if keep else b"Connection: close\r\n\r\n"
            want = (resp.status, resp.status_line + resp.fields + ending + body, resp.keep_alive)
            assert answer == want, (SEED, buf)


def test_take_request_and_relay_response_refuse_what_is_not_theirs() -> None:
    with pytest.raises(TypeError):
        _heads.take_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 8192)
    with pytest.raises(ValueError):
        _heads.take_request(bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), -1, 8192)
    with pytest.raises(TypeError):
        _heads.relay_response(bytearray(), False, True)
    # A buffer that cannot be resized (a view of it is held) is left whole, as `del` would.
    buf = bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with memoryview(buf):
        with pytest.raises(BufferError):
            _heads.take_request(buf, 0, 8192)
        with pytest.raises(BufferError):
            take_request_py(buf, 0, 8192)
    assert buf == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
