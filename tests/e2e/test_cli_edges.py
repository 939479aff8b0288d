"""Rough edges found with the real Heroku CLI, each checked with the CLI against `waka up`:

- `ps:scale` refuses process types the current slug does not declare (also before any deploy);
- a failing log drain's credentials never reach waka's own log (nor the audit log);
- `heroku stack` / `apps:stacks` list the stack; `auth:token` prints the token and no error;
- `addons:open` gets a URL; `heroku redis --json` names the real plan and `redis:cli` still
  talks to the server (over TLS);
- `heroku logs` keeps the leading whitespace of a traceback's lines;
- a config value with a NUL is refused before it can be released;
- a new release's dyno starts at once, not after the crash back-off of the old release's dyno.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from .conftest import (
    Api,
    WakaServer,
    app_repo,
    flat,
    git_url,
    release_rows,
    wait_for,
)
from .test_addons import data_cli

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]


@pytest.fixture(scope="module")
def api(server: WakaServer):
    client = Api(server)
    yield client
    client.close()


def through_router(server: WakaServer, app: str) -> int:
    try:
        return httpx.get(
            f"http://127.0.0.1:{server.router_port}/",
            headers={"Host": f"{app}.localhost"},
            timeout=10,
        ).status_code
    except httpx.HTTPError:
        return 0


def push_procfile(server: WakaServer, app: str, tmp_path: Path, procfile: str) -> None:
    """Push a Procfile-only app (no buildpack work: quick) and wait for its release."""
    repo = app_repo("shell-app", tmp_path / app)
    (repo.path / "Procfile").write_text(procfile)
    repo.commit_all("procfile")
    pushed = repo.push(git_url(server, app))
    assert pushed.returncode == 0, pushed.output


def releases(server: WakaServer, app: str) -> list[int]:
    return [r[0] for r in release_rows(server.heroku("releases", "-a", app).stdout)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- 1. ps:scale and the slug's process types ------------------------------------------------


def test_scale_needs_a_process_type_of_the_current_slug(server, api, tmp_path):
    app = api.create_app("edges-scale")
    refused = server.heroku("ps:scale", "web=1:eco", "-a", app, check=False)
    assert refused.returncode != 0
    assert "Couldn't find that process type (web)." in flat(refused.stderr), refused
    assert api.get(f"/apps/{app}/formation") == []

    push_procfile(
        server, app, tmp_path, "web: exec python3 -m http.server $PORT\nworker: sleep 1d\n"
    )
    before = releases(server, app)
    err = server.heroku("ps:scale", "web=1:eco", "worker=2", "-a", app).stderr
    assert "now running web at 1:Eco, worker at 2:Standard-1X" in flat(err), err
    listed = server.heroku("ps:scale", "-a", app).stdout.split()
    assert sorted(listed) == ["web=1:Eco", "worker=2:Standard-1X"], listed

    # A type the Procfile does not declare: refused, and the batch with it changes nothing.
    for args in (["clock=1"], ["worker=0", "clock=1"]):
        refused = server.heroku("ps:scale", *args, "-a", app, check=False)
        assert refused.returncode != 0
        assert "Couldn't find that process type (clock)." in flat(refused.stderr), refused
    assert sorted(server.heroku("ps:scale", "-a", app).stdout.split()) == listed
    assert releases(server, app) == before  # scaling makes no release


# --- 2. no drain credentials in waka's own log -----------------------------------------------


def test_a_failing_drain_logs_no_credentials(server, api):
    app = api.create_app("edges-drain")
    port = closed_port()
    secrets = ("drainuser", "s3cretpw", "t0kenpath", "k3yquery")
    url = f"https://{secrets[0]}:{secrets[1]}@127.0.0.1:{port}/{secrets[2]}?key={secrets[3]}"
    server.heroku("drains:add", url, "-a", app)
    assert url in server.heroku("drains", "-a", app).stdout  # the owner still sees it whole

    shown = f"drain https://127.0.0.1:{port} unavailable"
    for n in range(3):  # lines for the drain: each release logs app[api] lines
        server.heroku("config:set", f"N={n}", "-a", app)
    wait_for(lambda: server.log().count(shown) >= 2, timeout=30, what="retries in waka's log")
    log = server.log()
    audit = server.waka("audit", "--app", app).stdout
    assert f"Add log drain https://127.0.0.1:{port}" in audit, audit
    for secret in secrets:
        assert secret not in log
        assert secret not in audit
    server.heroku("drains:remove", url, "-a", app)


# --- 3, 4. stacks and auth:token -------------------------------------------------------------


def test_stack_commands_and_auth_token(server, api):
    app = api.create_app("edges-stack")
    for command in ("stack", "apps:stacks"):
        done = server.heroku(command, "-a", app)
        assert done.stdout.splitlines() == [f"=== {app} Available Stacks", "", "* waka-bookworm"], (
            done
        )
    info = json.loads(server.heroku("apps:info", "-a", app, "--json").stdout)
    assert info["app"]["stack"]["name"] == info["app"]["build_stack"]["name"] == "waka-bookworm"
    refused = server.heroku("stack:set", "heroku-24", "-a", app, check=False)
    assert refused.returncode != 0 and "heroku-24" in flat(refused.stderr), refused

    token = server.heroku("auth:token")
    assert token.stdout == f"{server.api_key}\n"
    assert token.stderr.strip() == "", token.stderr  # no 404, no expiry warning
    (authorization,) = json.loads(server.heroku("authorizations", "--json").stdout)
    listed = flat(server.heroku("authorizations").stdout)
    assert "API key (waka users:create)" in listed and authorization["id"] in listed, listed
    info = flat(server.heroku("authorizations:info", authorization["id"]).stdout)
    assert "Scope: global" in info and authorization["id"] in info, info


# --- 5. addons:open and the Redis plan --------------------------------------------------------


def test_addons_open_and_the_real_redis_plan(server, api):
    app = api.create_app("edges-redis")
    name = f"{app}-kv"
    server.heroku("addons:create", "heroku-redis:premium-0", "-a", app, "--name", name)
    try:
        wait_for(
            lambda: api.get(f"/apps/{app}/addons")[0]["state"] == "provisioned",
            what="the Redis add-on provisioned",
        )
        opened = server.heroku("addons:open", name, "-a", app, "--show-url")
        addon_id = api.get(f"/apps/{app}/addons/{name}")["id"]
        assert opened.stdout.strip() == f"http://localhost:{server.port}/addons/{addon_id}"
        assert api.get(f"/addons/{addon_id}")["name"] == name  # the URL answers, with the key

        (redis,) = json.loads(data_cli(server, "redis", "-a", app, "--json").stdout)
        assert redis["plan"] == "premium-0", redis
        # redis:cli on a premium plan speaks TLS to the server's port + 1.
        cli = data_cli(server, "redis:cli", "-a", app, input="SET edge ok\nGET edge\n")
        assert f"Connecting to {name} (REDIS_URL)" in cli.stdout, cli
        assert "ok" in cli.stdout.splitlines(), cli
        assert "Insecure action" not in cli.stdout + cli.stderr  # no plain-text prompt
    finally:
        server.heroku("addons:destroy", name, "-a", app, "--confirm", app)


# --- 6, 7, 8. a crashing app: its traceback, a NUL refused, the fix starting at once ----------


def test_crash_then_fix_traceback_nul_and_no_back_off_carried_over(server, api, tmp_path):
    app = api.create_app("edges-crash")
    server.heroku("config:set", "CRASH=1", "-a", app)
    push_procfile(
        server,
        app,
        tmp_path,
        'web: if [ "$CRASH" = 1 ]; then python3 -c "boom()"; exit 1; fi; '
        "exec python3 -m http.server $PORT --bind 0.0.0.0\n",
    )

    # The crash back-off grows: 0, 1, 2, 4, 8, 16 s... Wait until web.1 has just crashed
    # with more than 10 s of back-off left before its next start.
    def backoff_left() -> float | None:
        logs = server.heroku("logs", "-n", "1500", "-a", app).stdout.splitlines()
        web = [line for line in logs if "heroku[web.1]:" in line]
        exits = [line for line in web if "Process exited with status 1" in line]
        if len(exits) < 5 or not web[-1].endswith("State changed from starting to crashed"):
            return None
        crashed_at = datetime.fromisoformat(exits[-1].split(" ", 1)[0])
        delay = min(2.0 ** (len(exits) - 2), 60.0)
        left = delay - (datetime.now(UTC) - crashed_at).total_seconds()
        return left if left > 10 else None

    left = wait_for(backoff_left, timeout=120, what="web.1 in a long crash back-off")

    # 8 (at once, while the back-off lasts): the fix is a new release; its web.1 starts at
    # once, not after web.1's back-off.
    server.heroku("config:set", "CRASH=0", "-a", app)
    released = time.monotonic()
    wait_for(lambda: through_router(server, app) == 200, timeout=30, what="a 200 from the fix")
    took = time.monotonic() - released
    assert took < 6.0, (
        f"the new release's dyno served its first 200 after {took:.1f} s "
        f"(the old dyno's back-off had {left:.1f} s left)"
    )

    # 6: the traceback keeps its indentation. (The CLI's colouring trims each message, on
    # Heroku too; HEROKU_LOGS_COLOR=0 shows the lines as sent.)
    plain = server.heroku("logs", "-n", "1500", "-a", app, env={"HEROKU_LOGS_COLOR": "0"}).stdout
    assert 'app[web.1]:   File "<string>", line 1, in <module>' in plain, plain
    assert "app[web.1]: Traceback (most recent call last):" in plain

    # 7: a NUL in a value (only the API can send one) is refused, nothing released.
    before = releases(server, app)
    response = api.client.patch(f"/apps/{app}/config-vars", json={"CRASH": "0\u00000"})
    assert response.status_code == 422, response.text
    assert response.json()["id"] == "invalid_params"
    assert "NUL" in response.json()["message"]
    assert releases(server, app) == before
    assert server.heroku("config:get", "CRASH", "-a", app).stdout == "0\n"
