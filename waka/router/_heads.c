/* The commonest HTTP/1.1 heads, scanned in one pass: waka.router.http's _SIMPLE_REQUEST and
 * _SIMPLE_RESPONSE regexes, decided the same way and answered with the same groups.
 *
 * Why C: those two regex matches were ~4.5 us of the router's ~32 us per proxied request on
 * CPython 3.11 (docs/performance.md). This is an accelerator only: a head it does not take
 * (None) goes down the same Python paths as before, which stay the reference; the tests hold
 * both to the same answers on valid, broken and random heads (tests/test_router_heads_c.py).
 *
 * Every read is bounds-checked against the head's length: a head is untrusted bytes.
 */
#define PY_SSIZE_T_CLEAN
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

/* simple_request(head) -> (method, target, http10, host, start, conn_start, conn_end, option)
 * or None: _SIMPLE_REQUEST's fullmatch. `start` is where the field lines begin; the
 * Connection line's span and option (1 keep-alive, 0 close) are -1 when it has none. */
static PyObject *simple_request(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "a head is bytes");
        return NULL;
    }
    const unsigned char *h = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t len = PyBytes_GET_SIZE(arg);
    Py_ssize_t i = 0;
    while (i < len && TCHAR[h[i]]) i++;
    Py_ssize_t method_end = i;
    if (method_end == 0 || i >= len || h[i] != ' ') Py_RETURN_NONE;
    Py_ssize_t target = ++i;
    if (i >= len || h[i] != '/') Py_RETURN_NONE;
    while (i < len && h[i] > 0x20 && h[i] != 0x7f) i++;
    Py_ssize_t target_end = i;
    /* " HTTP/1.D\r\n" */
    if (len - i < 11 || memcmp(h + i, " HTTP/1.", 8) != 0 || h[i + 8] < '0' || h[i + 8] > '9' ||
        h[i + 9] != '\r' || h[i + 10] != '\n')
        Py_RETURN_NONE;
    int http10 = h[i + 8] == '0';
    Py_ssize_t start = i + 11;
    /* plain lines, the Host line, plain lines, then maybe a Connection line and plain lines */
    Py_ssize_t at = plain_lines(h, len, start, REQUEST_NAMES);
    if (at < 0 || at == len) Py_RETURN_NONE;
    Py_ssize_t name_end, value, value_end;
    Py_ssize_t next = field_line(h, len, at, &name_end, &value, &value_end);
    if (next < 0 || !same_name(h + at, name_end - at, "host")) Py_RETURN_NONE;
    Py_ssize_t host = value, host_end = value_end;
    trim(h, &host, &host_end);
    at = plain_lines(h, len, next, REQUEST_NAMES);
    if (at < 0) Py_RETURN_NONE;
    Py_ssize_t conn_start = -1, conn_end = -1;
    int option = -1;
    if (at < len) {
        next = field_line(h, len, at, &name_end, &value, &value_end);
        if (next < 0 || !same_name(h + at, name_end - at, "connection")) Py_RETURN_NONE;
        option = connection_option(h, value, value_end);
        if (option < 0) Py_RETURN_NONE;
        conn_start = at;
        conn_end = next;
        at = plain_lines(h, len, next, REQUEST_NAMES);
        if (at != len) Py_RETURN_NONE;
    }
    PyObject *method_b = slice(h, 0, method_end);
    PyObject *target_b = slice(h, target, target_end);
    PyObject *host_b = slice(h, host, host_end);
    if (!method_b || !target_b || !host_b) {
        Py_XDECREF(method_b);
        Py_XDECREF(target_b);
        Py_XDECREF(host_b);
        return NULL;
    }
    return Py_BuildValue("(NNONnnni)", method_b, target_b, http10 ? Py_True : Py_False, host_b,
                         start, conn_start, conn_end, option);
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

/* simple_response(head) -> (start, http11, status, length, conn_start, conn_end, option) or
 * None: _SIMPLE_RESPONSE's fullmatch. `start` is where the field lines begin (the status line
 * is head[:start]); length -1 when there is no Content-Length; the Connection line as above. */
static PyObject *simple_response(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "a head is bytes");
        return NULL;
    }
    const unsigned char *h = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t len = PyBytes_GET_SIZE(arg);
    /* "HTTP/1.D DDD" then "\r\n" or " reason\r\n" */
    if (len < 14 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '0' && h[7] != '1') || h[8] != ' ')
        Py_RETURN_NONE;
    for (int k = 9; k < 12; k++)
        if (h[k] < '0' || h[k] > '9') Py_RETURN_NONE;
    int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    Py_ssize_t i = 12;
    if (h[i] == ' ') {
        i++;
        while (i < len && h[i] != '\r' && h[i] != '\n' && h[i] != '\0') i++;
    }
    if (i + 1 >= len || h[i] != '\r' || h[i + 1] != '\n') Py_RETURN_NONE;
    Py_ssize_t start = i + 2;
    long long length = -1;
    Py_ssize_t conn_start = -1, conn_end = -1;
    int option = -1;
    /* plain lines, then at most one Content-Length and one Connection line (either first),
     * each followed by plain lines */
    Py_ssize_t at = plain_lines(h, len, start, RESPONSE_NAMES);
    for (int acted = 0; at >= 0 && at < len; acted++) {
        Py_ssize_t name_end, value, value_end;
        Py_ssize_t next = field_line(h, len, at, &name_end, &value, &value_end);
        if (acted == 2 || next < 0) Py_RETURN_NONE;
        if (length < 0 && same_name(h + at, name_end - at, "content-length")) {
            length = content_length(h, value, value_end);
            if (length < 0) Py_RETURN_NONE;
        } else if (option < 0 && same_name(h + at, name_end - at, "connection")) {
            option = connection_option(h, value, value_end);
            if (option < 0) Py_RETURN_NONE;
            conn_start = at;
            conn_end = next;
        } else {
            Py_RETURN_NONE;
        }
        at = plain_lines(h, len, next, RESPONSE_NAMES);
    }
    if (at != len) Py_RETURN_NONE;
    return Py_BuildValue("(nOiLnni)", start, h[7] == '1' ? Py_True : Py_False, status, length,
                         conn_start, conn_end, option);
}

static PyMethodDef METHODS[] = {
    {"simple_request", simple_request, METH_O, "The commonest request head's parts, or None."},
    {"simple_response", simple_response, METH_O, "The commonest response head's parts, or None."},
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
