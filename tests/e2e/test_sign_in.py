"""Signing in as on Heroku, with the real CLI over HTTPS: `heroku login -i` with the password
`waka users:create` printed writes ~/.netrc, `heroku auth:token`, `sessions`, the
`authorizations:*` commands for long-lived tokens, and `heroku logout`."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import CLI_TIMEOUT, CliResult, WakaServer, flat, key_values, unique_name
from .test_https import cli_env, heroku

pytestmark = [pytest.mark.e2e]


def new_user(server: WakaServer) -> tuple[str, str, str]:
    """(email, password, API key) of a new user, from `waka users:create`'s output."""
    email = f"{unique_name('signin')}@example.com"
    out = server.waka("users:create", email).stdout
    password = re.search(r"^Password \(for `heroku login -i`\): (\S+)$", out, re.M)
    assert password, out
    return email, password[1], out.strip().splitlines()[-1]


def login(server: WakaServer, home: Path, email: str, password: str) -> str:
    """`heroku login -i` at a terminal (a pty, as its prompts need): what it printed."""
    (home / ".cache" / "heroku").mkdir(parents=True, exist_ok=True)
    (home / ".cache" / "heroku" / "terms-of-service").touch()
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [str(server.heroku_cli), "login", "-i"],
        cwd=home,
        env=cli_env(server, home),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    answers = [("Email", email), ("Password", password)]
    output = b""
    deadline = time.monotonic() + CLI_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the CLI exited and closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if answers and answers[0][0].encode() in output.rpartition(b"\n")[2]:
                os.write(master, answers.pop(0)[1].encode() + b"\r")
                output += b"\n"
        code = child.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if child.poll() is None:
            child.kill()
        os.close(master)
    # What it printed, without colours and cursor moves.
    said = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
    assert code == 0, said
    return said


def netrc_entry(home: Path, machine: str) -> tuple[str, str] | None:
    text = (home / ".netrc").read_text() if (home / ".netrc").exists() else ""
    found = re.search(rf"machine {re.escape(machine)}\s+login (\S+)\s+password (\S+)", text)
    return (found[1], found[2]) if found else None


def key(token: str) -> dict[str, str]:
    return {"HEROKU_API_KEY": token}


def ok(result: CliResult) -> CliResult:
    assert result.returncode == 0, result
    return result


def test_login_tokens_and_logout_with_the_real_cli(server: WakaServer, tmp_path: Path) -> None:
    email, password, api_key = new_user(server)
    home = tmp_path / "home"
    home.mkdir()
    machine = f"localhost:{server.tls_port}"

    # A wrong password: refused, nothing written.
    with pytest.raises(AssertionError):
        login(server, home, email, password + "x")
    assert netrc_entry(home, machine) is None

    said = login(server, home, email, password)
    assert f"Logged in as {email}" in said
    entry = netrc_entry(home, machine)
    assert entry is not None and entry[0] == email
    session_token = entry[1]
    assert session_token.startswith("HRKU-") and session_token not in (api_key, password)

    assert ok(heroku(server, home, "auth:whoami")).stdout.strip() == email
    assert ok(heroku(server, home, "auth:token")).stdout.strip() == session_token
    sessions = ok(heroku(server, home, "sessions")).stdout
    assert "Heroku CLI login from" in sessions

    # A long-lived token for CI, with a description, scope and expiry.
    made = ok(
        heroku(server, home, "authorizations:create", "-d", "CI deploys", "-e", "3600", "--json")
    )
    ci = json.loads(made.stdout)
    ci_token = ci["access_token"]["token"]
    assert ci["description"] == "CI deploys" and ci["scope"] == ["global"]
    assert 3500 < ci["access_token"]["expires_in"] <= 3600
    app = unique_name("signin")
    ok(heroku(server, home, "apps:create", app, env=key(ci_token)))

    listed = ok(heroku(server, home, "authorizations")).stdout
    assert "CI deploys" in listed and ci["id"] in listed
    info = key_values(ok(heroku(server, home, "authorizations:info", ci["id"])).stdout.splitlines())
    assert info["Description"] == "CI deploys" and info["Scope"] == "global"
    assert "Expires at" in info
    updated = ok(heroku(server, home, "authorizations:update", ci["id"], "-d", "CI (main)"))
    assert "CI (main)" in updated.stdout

    rotated = ok(heroku(server, home, "authorizations:rotate", ci["id"])).stdout
    new_token = key_values(rotated.splitlines())["Token"]
    assert new_token.startswith("HRKU-") and new_token != ci_token
    assert heroku(server, home, "apps:info", "-a", app, env=key(ci_token)).returncode != 0
    ok(heroku(server, home, "apps:info", "-a", app, env=key(new_token)))

    revoked = ok(heroku(server, home, "authorizations:revoke", ci["id"]))
    assert "revoked authorization from CI (main)" in flat(revoked.stderr)
    refused = heroku(server, home, "apps:info", "-a", app, env=key(new_token))
    assert refused.returncode != 0 and "HEROKU_API_KEY is invalid" in flat(refused.stderr)

    # Logging out revokes the session's token and forgets it; the API key still works.
    ok(heroku(server, home, "logout"))
    assert netrc_entry(home, machine) is None
    assert heroku(server, home, "auth:whoami", env=key(session_token)).returncode != 0
    assert ok(heroku(server, home, "auth:whoami", env=key(api_key))).stdout.strip() == email

    # Every sign-in and token change is in the ledger.
    actions = [line.action for line in server.audit("--actor", email)]
    assert any(a.startswith("Sign in with password: Heroku CLI login from") for a in actions)
    assert any(a.startswith("Create authorization CI deploys (global,") for a in actions)
    assert any(a.startswith(f"Rotate authorization {ci['id']}") for a in actions)
    assert f"Revoke authorization {ci['id']}" in actions
    assert sum(a.startswith("Revoke authorization") for a in actions) == 2  # and the session's
    log = server.log()
    for secret in (password, session_token, ci_token, new_token):
        assert secret not in "\n".join(actions) and secret not in log
