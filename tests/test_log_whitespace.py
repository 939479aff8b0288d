"""A log line keeps its leading whitespace (a traceback's indentation) from the dyno's output to
the log-session stream: only the line ending is taken off. (The Docker dyno's pump is covered
end to end in tests/e2e/test_cli_edges.py.)"""

from __future__ import annotations

from tests.test_logs_api import Env, env, sse  # noqa: F401

TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/app/app.py", line 3, in <module>',
    "    boom()",
    "\tindented with a tab  ",
    "NameError: name 'boom' is not defined",
]


def test_leading_whitespace_reaches_the_stream(env: Env) -> None:  # noqa: F811
    env.logplex.emit(env.app_id, "app", "web.1", "\n".join(TRACEBACK) + "\r\n")
    response = env.client.get(env.stream_path({}), headers={"Accept": "text/event-stream"})
    data = [e["data"] for e in sse(iter(response.text.split("\n"))) if "data" in e]
    assert [d.split(" app[web.1]: ", 1)[1] for d in data] == TRACEBACK
