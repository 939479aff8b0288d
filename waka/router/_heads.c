/* The commonest HTTP/1.1 heads, scanned in one pass: waka.router.http's _SIMPLE_REQUEST and
 * _SIMPLE_RESPONSE regexes, decided the same way and answered with the same groups; and the
 * router's commonest exchange around them: a request taken whole out of a client connection's
 * buffer (take_request), a response taken whole out of a dyno connection's buffer, ready for
 * the client (relay_response).
 *
 * Why C: those two regex matches were ~4.5 us of the router's ~32 us per proxied request on
 * CPython 3.11, and the buffer work around them (finding the head's end, copying it out,
 * slicing the fields, joining the response for the client) another ~1.5 us
 * (docs/performance.md). This is an accelerator only: what it does not take (None) goes down
 * the same Python paths as before, which stay the reference (http.simple_request_re,
 * take_request_py, relay_response_py); the tests hold both to the same answers, and the same
 * buffers after, on valid, broken and random input (tests/test_router_heads_c.py).
 *
 * Every read is bounds-checked against the head's or the buffer's length: it is untrusted.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE /* memmem */
#include <Python.h>

/* RFC 9110 5.6.2's tchar: what a method or a field name is made of. */
static unsigned char TCHAR[256];

static void init_tchar(void) {
    const char *extra = "!#$%&'*+-.^_`|~";
    for (int c = '0'; c <= '9'; c++) TCHAR[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) TCHAR[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) TCHAR[c] = 1;
    for (const char *p = extra; *p; p++) TCHAR[(unsigned char)*p] = 1;
}

static inline unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Whether s[0:n] is `lit` (lower case) in any ASCII case. */
static int same_name(const unsigned char *s, Py_ssize_t n, const char *lit) {
    Py_ssize_t i = 0;
    for (; i < n; i++) {
        if (lit[i] == '\0' || lower(s[i]) != (unsigned char)lit[i]) return 0;
    }
    return lit[i] == '\0';
}

static int one_of(const unsigned char *s, Py_ssize_t n, const char *const *names) {
    for (; *names; names++)
        if (same_name(s, n, *names)) return 1;
    return 0;
}

/* The field names each router path acts on (http.py's _REQUEST_FIELDS, _RESPONSE_FIELDS). */
static const char *const REQUEST_NAMES[] = {
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "expect",
    "x-forwarded-for", "x-request-id", "keep-alive", "proxy-connection", "te", "trailer",
    "proxy-authenticate", "proxy-authorization", "x-forwarded-proto", "x-forwarded-port",
    "x-request-start", NULL};
static const char *const RESPONSE_NAMES[] = {
    "content-length", "transfer-encoding", "connection", "upgrade", "keep-alive",
    "proxy-connection", "te", "trailer", "proxy-authenticate", "proxy-authorization", NULL};

/* One field line at `at`: `token ":" [^\r\n\0]* CRLF`. Fills the name's end and the value's
 * span (the bytes after ":" up to CR) and returns the next line's start, or -1. */
static Py_ssize_t field_line(const unsigned char *h, Py_ssize_t len, Py_ssize_t at,
                             Py_ssize_t *name_end, Py_ssize_t *value, Py_ssize_t *value_end) {
    Py_ssize_t i = at;
    while (i < len && TCHAR[h[i]]) i++;
    if (i == at || i >= len || h[i] != ':') return -1;
    *name_end = i;
    *value = ++i;
    while (i < len && h[i] != '\r' && h[i] != '\n' && h[i] != '\0') i++;
    if (i + 1 >= len || h[i] != '\r' || h[i + 1] != '\n') return -1;
    *value_end = i;
    return i + 2;
}

static inline int blank(unsigned char c) { return c == ' ' || c == '\t'; }

/* A value with its blanks cut from both ends: [*start, *end). */
static void trim(const unsigned char *h, Py_ssize_t *start, Py_ssize_t *end) {
    while (*start < *end && blank(h[*start])) (*start)++;
    while (*end > *start && blank(h[*end - 1])) (*end)--;
}

/* A Connection value of exactly keep-alive (1) or close (0), any case, blanks around; -1. */
static int connection_option(const unsigned char *h, Py_ssize_t start, Py_ssize_t end) {
    trim(h, &start, &end);
    if (same_name(h + start, end - start, "keep-alive")) return 1;
    if (same_name(h + start, end - start, "close")) return 0;
    return -1;
}

/* Plain field lines (none named in `names`) from `at`: the start of the first line that is
 * not one (== len at the head's end), or -1 when what follows is no field line at all. */
static Py_ssize_t plain_lines(const unsigned char *h, Py_ssize_t len, Py_ssize_t at,
                              const char *const *names) {
    Py_ssize_t name_end, value, value_end;
    while (at < len) {
        Py_ssize_t next = field_line(h, len, at, &name_end, &value, &value_end);
        if (next < 0) return -1;
        if (one_of(h + at, name_end - at, names)) return at;
        at = next;
    }
    return at;
}

static PyObject *slice(const unsigned char *h, Py_ssize_t start, Py_ssize_t end) {
    return PyBytes_FromStringAndSize((const char *)h + start, end - start);
}

/* The parts of the commonest request head, as _SIMPLE_REQUEST's groups give them. */
typedef struct {
    Py_ssize_t method_end, target, target_end, host, host_end, start, conn_start, conn_end;
    int http10, option;
} request_parts;

/* _SIMPLE_REQUEST's fullmatch of h[0:len]: 1 and the parts filled, or 0. */
static int scan_request(const unsigned char *h, Py_ssize_t len, request_parts *r) {
    Py_ssize_t i = 0;
    while (i < len && TCHAR[h[i]]) i++;
    r->method_end = i;
    if (i == 0 || i >= len || h[i] != ' ') return 0;
    r->target = ++i;
    if (i >= len || h[i] != '/') return 0;
    while (i < len && h[i] > 0x20 && h[i] != 0x7f) i++;
    r->target_end = i;
    /* " HTTP/1.D\r\n" */
    if (len - i < 11 || memcmp(h + i, " HTTP/1.", 8) != 0 || h[i + 8] < '0' || h[i + 8] > '9' ||
        h[i + 9] != '\r' || h[i + 10] != '\n')
        return 0;
    r->http10 = h[i + 8] == '0';
    r->start = i + 11;
    /* plain lines, the Host line, plain lines, then maybe a Connection line and plain lines */
    Py_ssize_t at = plain_lines(h, len, r->start, REQUEST_NAMES);
    if (at < 0 || at == len) return 0;
    Py_ssize_t name_end, value, value_end;
    Py_ssize_t next = field_line(h, len, at, &name_end, &value, &value_end);
    if (next < 0 || !same_name(h + at, name_end - at, "host")) return 0;
    r->host = value;
    r->host_end = value_end;
    trim(h, &r->host, &r->host_end);
    at = plain_lines(h, len, next, REQUEST_NAMES);
    if (at < 0) return 0;
    r->conn_start = r->conn_end = -1;
    r->option = -1;
    if (at < len) {
        next = field_line(h, len, at, &name_end, &value, &value_end);
        if (next < 0 || !same_name(h + at, name_end - at, "connection")) return 0;
        r->option = connection_option(h, value, value_end);
        if (r->option < 0) return 0;
        r->conn_start = at;
        r->conn_end = next;
        at = plain_lines(h, len, next, REQUEST_NAMES);
        if (at != len) return 0;
    }
    return 1;
}

/* simple_request(head) -> (method, target, http10, host, start, conn_start, conn_end, option)
 * or None: _SIMPLE_REQUEST's fullmatch. `start` is where the field lines begin; the
 * Connection line's span and option (1 keep-alive, 0 close) are -1 when it has none. */
static PyObject *simple_request(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "a head is bytes");
        return NULL;
    }
    const unsigned char *h = (const unsigned char *)PyBytes_AS_STRING(arg);
    request_parts r;
    if (!scan_request(h, PyBytes_GET_SIZE(arg), &r)) Py_RETURN_NONE;
    PyObject *method_b = slice(h, 0, r.method_end);
    PyObject *target_b = slice(h, r.target, r.target_end);
    PyObject *host_b = slice(h, r.host, r.host_end);
    if (!method_b || !target_b || !host_b) {
        Py_XDECREF(method_b);
        Py_XDECREF(target_b);
        Py_XDECREF(host_b);
        return NULL;
    }
    return Py_BuildValue("(NNONnnni)", method_b, target_b, r.http10 ? Py_True : Py_False,
                         host_b, r.start, r.conn_start, r.conn_end, r.option);
}

/* A Content-Length value: 1 to 18 digits, blanks around. -1 otherwise. */
static long long content_length(const unsigned char *h, Py_ssize_t start, Py_ssize_t end) {
    trim(h, &start, &end);
    if (end - start < 1 || end - start > 18) return -1;
    long long n = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        if (h[i] < '0' || h[i] > '9') return -1;
        n = n * 10 + (h[i] - '0');
    }
    return n;
}

/* The parts of the commonest response head, as _SIMPLE_RESPONSE's groups give them. */
typedef struct {
    Py_ssize_t start, conn_start, conn_end;
    long long length;
    int http11, status, option;
} response_parts;

/* _SIMPLE_RESPONSE's fullmatch of h[0:len]: 1 and the parts filled, or 0. */
static int scan_response(const unsigned char *h, Py_ssize_t len, response_parts *r) {
    /* "HTTP/1.D DDD" then "\r\n" or " reason\r\n" */
    if (len < 14 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '0' && h[7] != '1') || h[8] != ' ')
        return 0;
    for (int k = 9; k < 12; k++)
        if (h[k] < '0' || h[k] > '9') return 0;
    r->http11 = h[7] == '1';
    r->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    Py_ssize_t i = 12;
    if (h[i] == ' ') {
        i++;
        while (i < len && h[i] != '\r' && h[i] != '\n' && h[i] != '\0') i++;
    }
    if (i + 1 >= len || h[i] != '\r' || h[i + 1] != '\n') return 0;
    r->start = i + 2;
    r->length = -1;
    r->conn_start = r->conn_end = -1;
    r->option = -1;
    /* plain lines, then at most one Content-Length and one Connection line (either first),
     * each followed by plain lines */
    Py_ssize_t at = plain_lines(h, len, r->start, RESPONSE_NAMES);
    for (int acted = 0; at >= 0 && at < len; acted++) {
        Py_ssize_t name_end, value, value_end;
        Py_ssize_t next = field_line(h, len, at, &name_end, &value, &value_end);
        if (acted == 2 || next < 0) return 0;
        if (r->length < 0 && same_name(h + at, name_end - at, "content-length")) {
            r->length = content_length(h, value, value_end);
            if (r->length < 0) return 0;
        } else if (r->option < 0 && same_name(h + at, name_end - at, "connection")) {
            r->option = connection_option(h, value, value_end);
            if (r->option < 0) return 0;
            r->conn_start = at;
            r->conn_end = next;
        } else {
            return 0;
        }
        at = plain_lines(h, len, next, RESPONSE_NAMES);
    }
    return at == len;
}

/* simple_response(head) -> (start, http11, status, length, conn_start, conn_end, option) or
 * None: _SIMPLE_RESPONSE's fullmatch. `start` is where the field lines begin (the status line
 * is head[:start]); length -1 when there is no Content-Length; the Connection line as above. */
static PyObject *simple_response(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "a head is bytes");
        return NULL;
    }
    response_parts r;
    if (!scan_response((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), &r))
        Py_RETURN_NONE;
    return Py_BuildValue("(nOiLnni)", r.start, r.http11 ? Py_True : Py_False, r.status, r.length,
                         r.conn_start, r.conn_end, r.option);
}

/* --- whole messages out of a connection's buffer (http.take_request, http.relay_response) --- */

/* Where the head that buf[from:] begins ends ("\r\n\r\n"), as bytearray.find; -1 for none. */
static Py_ssize_t head_end(const char *b, Py_ssize_t n, Py_ssize_t from) {
    if (from > n - 4) return -1;
    const char *found = memmem(b + from, (size_t)(n - from), "\r\n\r\n", 4);
    return found ? found - b : -1;
}

/* Bytes made of h[a0:a1] + h[b0:b1]. */
static PyObject *joined(const unsigned char *h, Py_ssize_t a0, Py_ssize_t a1, Py_ssize_t b0,
                        Py_ssize_t b1) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, (a1 - a0) + (b1 - b0));
    if (!out) return NULL;
    char *o = PyBytes_AS_STRING(out);
    memcpy(o, h + a0, (size_t)(a1 - a0));
    memcpy(o + (a1 - a0), h + b0, (size_t)(b1 - b0));
    return out;
}

static int args_ok(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *name) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, want);
        return 0;
    }
    if (!PyByteArray_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s reads a bytearray", name);
        return 0;
    }
    return 1;
}

/* take_request(buf, scanned, limit) -> see http.take_request_py, which it answers as. */
static PyObject *take_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!args_ok(args, nargs, 3, "take_request")) return NULL;
    PyObject *buf = args[0];
    Py_ssize_t scanned = PyLong_AsSsize_t(args[1]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if ((scanned == -1 || limit == -1) && PyErr_Occurred()) return NULL;
    if (scanned < 0) {
        PyErr_SetString(PyExc_ValueError, "scanned is a position in the buffer");
        return NULL;
    }
    const unsigned char *h = (const unsigned char *)PyByteArray_AS_STRING(buf);
    Py_ssize_t end = head_end((const char *)h, PyByteArray_GET_SIZE(buf), scanned);
    if (end < 0) Py_RETURN_FALSE;
    Py_ssize_t len = end + 2; /* each line with its CRLF, without the blank line */
    request_parts r;
    if (len > limit || !scan_request(h, len, &r)) Py_RETURN_NONE;
    PyObject *method_b = slice(h, 0, r.method_end);
    PyObject *target_b = slice(h, r.target, r.target_end);
    PyObject *host_b = slice(h, r.host, r.host_end);
    PyObject *fields = r.conn_start < 0 ? slice(h, r.start, len)
                                        : joined(h, r.start, r.conn_start, r.conn_end, len);
    PyObject *answer = NULL;
    if (method_b && target_b && host_b && fields) {
        int keep = r.conn_start < 0 ? !r.http10 : r.option == 1;
        answer = Py_BuildValue("(OOOOOiO)", method_b, target_b, r.http10 ? Py_True : Py_False,
                               host_b, fields, 0, keep ? Py_True : Py_False);
    }
    Py_XDECREF(method_b);
    Py_XDECREF(target_b);
    Py_XDECREF(host_b);
    Py_XDECREF(fields);
    if (answer && PySequence_DelSlice(buf, 0, end + 4) < 0) Py_CLEAR(answer);
    return answer;
}

/* relay_response(buf, head_request, keep, limit) -> see http.relay_response_py. */
static PyObject *relay_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!args_ok(args, nargs, 4, "relay_response")) return NULL;
    PyObject *buf = args[0];
    int head_request = PyObject_IsTrue(args[1]);
    int keep = PyObject_IsTrue(args[2]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (head_request < 0 || keep < 0 || (limit == -1 && PyErr_Occurred())) return NULL;
    const unsigned char *h = (const unsigned char *)PyByteArray_AS_STRING(buf);
    Py_ssize_t n = PyByteArray_GET_SIZE(buf);
    if (n > limit) Py_RETURN_NONE;
    Py_ssize_t end = head_end((const char *)h, n, 0);
    response_parts r;
    if (end < 0 || !scan_response(h, end + 2, &r) || r.status < 200) Py_RETURN_NONE;
    long long body;
    if (head_request || r.status == 204 || r.status == 304)
        body = 0;
    else if (r.length >= 0)
        body = r.length;
    else
        Py_RETURN_NONE; /* until the dyno closes: streamed */
    Py_ssize_t at = end + 4;
    if (body > n - at) Py_RETURN_NONE; /* not all here yet: streamed */
    /* the status line as HTTP/1.1, the fields without the Connection line, the router's own
     * end of head, then the body */
    static const char CLOSE[] = "Connection: close\r\n\r\n";
    Py_ssize_t status_len = r.start, tail = keep ? 2 : (Py_ssize_t)sizeof(CLOSE) - 1;
    Py_ssize_t fields = r.conn_start < 0 ? end + 2 - r.start
                                         : (r.conn_start - r.start) + (end + 2 - r.conn_end);
    PyObject *out = PyBytes_FromStringAndSize(NULL, status_len + fields + tail + (Py_ssize_t)body);
    if (!out) return NULL;
    char *o = PyBytes_AS_STRING(out);
    memcpy(o, h, (size_t)status_len);
    if (!r.http11) o[7] = '1'; /* "HTTP/1.0 " -> "HTTP/1.1 " */
    o += status_len;
    if (r.conn_start < 0) {
        memcpy(o, h + r.start, (size_t)fields);
    } else {
        memcpy(o, h + r.start, (size_t)(r.conn_start - r.start));
        memcpy(o + (r.conn_start - r.start), h + r.conn_end, (size_t)(end + 2 - r.conn_end));
    }
    o += fields;
    memcpy(o, keep ? "\r\n" : CLOSE, (size_t)tail);
    memcpy(o + tail, h + at, (size_t)body);
    int dyno_keep = r.conn_start < 0 ? r.http11 : r.option == 1;
    if (PySequence_DelSlice(buf, 0, at + (Py_ssize_t)body) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(iNO)", r.status, out, dyno_keep ? Py_True : Py_False);
}

static PyMethodDef METHODS[] = {
    {"simple_request", simple_request, METH_O, "The commonest request head's parts, or None."},
    {"simple_response", simple_response, METH_O, "The commonest response head's parts, or None."},
    {"take_request", (PyCFunction)(void (*)(void))take_request, METH_FASTCALL,
     "The commonest request, taken from a connection's buffer (see http.take_request_py)."},
    {"relay_response", (PyCFunction)(void (*)(void))relay_response, METH_FASTCALL,
     "A whole common response, taken from a connection's buffer for the client "
     "(see http.relay_response_py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "waka.router._heads",
    "The router's commonest HTTP heads, scanned in C (see waka.router.http).", -1, METHODS,
};

PyMODINIT_FUNC PyInit__heads(void) {
    init_tchar();
    return PyModule_Create(&MODULE);
}
