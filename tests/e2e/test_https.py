"""The Platform API and git over HTTPS (`waka up --api-tls-port`): the unmodified Heroku CLI
with HEROKU_HOST=https://localhost:PORT and its key in ~/.netrc, the git remote it writes
(`heroku git:remote`) taking a real `git push` with ~/.netrc credentials, and curl and openssl
checking the certificate chain against waka's CA."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import (
    CLI_TIMEOUT,
    GIT_TIMEOUT,
    OWNER_EMAIL,
    REPO,
    STOP_TIMEOUT,
    CliResult,
    GitResult,
    WakaServer,
    app_repo,
    clean_env,
    free_port,
    git_env,
    release_rows,
    running_server,
    unique_name,
    wait_for,
)
from .test_git_push import deployed

pytestmark = [pytest.mark.e2e]


def https_url(server: WakaServer) -> str:
    return f"https://localhost:{server.tls_port}"


def ca_file(server: WakaServer) -> Path:
    return server.home / "tls" / "ca.pem"


def write_netrc(home: Path, server: WakaServer, *machines: str) -> None:
    """~/.netrc as `heroku login` writes it: the API key as password of the user's email."""
    home.mkdir(parents=True, exist_ok=True)
    netrc = home / ".netrc"
    netrc.write_text(
        "".join(
            f"machine {machine}\n  login {OWNER_EMAIL}\n  password {server.api_key}\n"
            for machine in machines
        )
    )
    netrc.chmod(0o600)
    (home / ".cache" / "heroku").mkdir(parents=True, exist_ok=True)
    (home / ".cache" / "heroku" / "terms-of-service").touch()


def cli_env(server: WakaServer, home: Path, trust: bool = True) -> dict[str, str]:
    """The CLI's environment for the HTTPS port, with no HEROKU_API_KEY: its key comes from
    ~/.netrc under `home`."""
    env = server.heroku_env(api_key="")
    env.pop("HEROKU_API_KEY")
    env.pop("NODE_EXTRA_CA_CERTS", None)
    env.update(HOME=str(home), HEROKU_HOST=https_url(server))
    env["HEROKU_PARTICLEBOARD_URL"] = https_url(server)
    if trust:
        env["NODE_EXTRA_CA_CERTS"] = str(ca_file(server))
    return env


def heroku(
    server: WakaServer,
    home: Path,
    *args: str,
    cwd: Path | None = None,
    trust: bool = True,
    env: dict[str, str] | None = None,
) -> CliResult:
    """The CLI on the HTTPS port; `env` adds to (or overrides) cli_env's."""
    done = subprocess.run(
        [str(server.heroku_cli), *args],
        cwd=cwd or home,
        env={**cli_env(server, home, trust), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def git(repo_path: Path, home: Path, *args: str, ca: Path | None) -> subprocess.CompletedProcess:
    """Real git with HOME=`home` (its ~/.netrc), trusting `ca` through GIT_SSL_CAINFO."""
    env = {**git_env(home), **({"GIT_SSL_CAINFO": str(ca)} if ca else {})}
    return subprocess.run(
        ["git", *args],
        cwd=repo_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=GIT_TIMEOUT,
    )


# --- the Heroku CLI ---------------------------------------------------------------------------


def test_the_heroku_cli_works_over_https_with_its_key_in_netrc(
    server: WakaServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # `heroku login` with HEROKU_HOST=https://localhost:PORT saves the key for "localhost:PORT".
    write_netrc(home, server, f"localhost:{server.tls_port}")
    app = unique_name("https")

    created = heroku(server, home, "apps:create", app)
    assert created.returncode == 0, created
    assert app in created.stderr + created.stdout
    set_ = heroku(server, home, "config:set", "GREETING=hello over tls", "-a", app)
    assert set_.returncode == 0, set_
    config = heroku(server, home, "config:get", "GREETING", "-a", app)
    assert config.stdout.strip() == "hello over tls", config
    releases = heroku(server, home, "releases", "-a", app)
    assert releases.returncode == 0, releases
    rows = release_rows(releases.stdout)
    assert rows[0][:1] == (2,) and "GREETING" in rows[0][1] and rows[0][2] == OWNER_EMAIL, rows
    info = heroku(server, home, "apps:info", "-a", app, "--json")
    assert f'"name": "{app}"' in info.stdout, info

    # Without waka's CA the CLI refuses the certificate: the connection is real, verified TLS.
    untrusted = heroku(server, home, "apps:info", "-a", app, trust=False)
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr.lower(), untrusted


# --- git over HTTPS -------------------------------------------------------------------------


def test_git_remote_from_the_cli_takes_a_push_over_https_with_netrc_credentials(
    server: WakaServer, tmp_path: Path
) -> None:
    app = unique_name("https-push")
    repo = app_repo("shell-app", tmp_path / app)
    home = tmp_path / "home"
    # The CLI's key (machine HOST:PORT, as `heroku login` writes it) and git's: curl, under
    # git, looks netrc machines up by host name alone.
    write_netrc(home, server, f"localhost:{server.tls_port}")
    assert heroku(server, home, "apps:create", app).returncode == 0

    remote = heroku(server, home, "git:remote", "-a", app, cwd=repo.path)
    assert remote.returncode == 0, remote
    url = git(repo.path, home, "remote", "get-url", "heroku", ca=None).stdout.strip()
    assert url == f"https://localhost:{server.tls_port}/{app}.git"

    # With the CLI's entry only, git has no password: waka's 401 makes it ask for one (and
    # the CLI's credential helper is not in git's configuration here).
    refused = git(repo.path, home, "push", "heroku", "main", ca=ca_file(server))
    assert refused.returncode != 0
    assert "could not read Username" in refused.stdout, refused.stdout
    # Not trusting waka's CA: git refuses the certificate before sending anything.
    write_netrc(home, server, f"localhost:{server.tls_port}", "localhost")
    untrusted = git(repo.path, home, "push", "heroku", "main", ca=None)
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stdout.lower(), untrusted.stdout

    pushed = git(repo.path, home, "push", "heroku", "main", ca=ca_file(server))
    deployed(GitResult(pushed.returncode, pushed.stdout), 2)
    assert "password" not in pushed.stdout.lower() and server.api_key not in pushed.stdout
    head = git(repo.path, home, "rev-parse", "HEAD", ca=None).stdout.strip()
    listed = git(repo.path, home, "ls-remote", "heroku", "refs/heads/main", ca=ca_file(server))
    assert listed.stdout.split()[:1] == [head], listed.stdout
    assert server.api_key not in server.log()


def test_git_push_with_the_credential_helper_the_cli_configures(
    server: WakaServer, tmp_path: Path
) -> None:
    """Only what `heroku login` writes (machine HOST:PORT): git gets the key from the CLI's
    own credential helper (`heroku git:credentials`), which `heroku create` sets up in
    ~/.gitconfig for https://HOST:PORT, beside the remote it adds in a repository."""
    app = unique_name("https-helper")
    repo = app_repo("shell-app", tmp_path / app)
    home = tmp_path / "home"
    write_netrc(home, server, f"localhost:{server.tls_port}")
    created = heroku(server, home, "create", app, cwd=repo.path)
    assert created.returncode == 0, created
    url = git(repo.path, home, "remote", "get-url", "heroku", ca=None).stdout.strip()
    assert url == f"https://localhost:{server.tls_port}/{app}.git"
    helper = (home / ".gitconfig").read_text()
    assert f'[credential "https://localhost:{server.tls_port}"]' in helper, helper

    env = {
        **cli_env(server, home),
        "PATH": os.pathsep.join([str(server.heroku_cli.parent), os.environ["PATH"]]),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_SSL_CAINFO": str(ca_file(server)),
    }
    pushed = subprocess.run(
        ["git", "push", "heroku", "main"],
        cwd=repo.path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=GIT_TIMEOUT,
    )
    deployed(GitResult(pushed.returncode, pushed.stdout), 2)


# --- curl and openssl -----------------------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_curl_verifies_the_chain_for_every_loopback_name(server: WakaServer, host: str) -> None:
    if host == "[::1]" and not socket.has_ipv6:
        pytest.skip("no IPv6 loopback")
    url = f"https://{host}:{server.tls_port}/account"
    headers = [
        "-H",
        "Accept: application/vnd.heroku+json; version=3",
        "-H",
        f"Authorization: Bearer {server.api_key}",
    ]
    answered = curl("--cacert", str(ca_file(server)), *headers, url)
    assert answered.returncode == 0, answered.stderr
    assert f'"email":"{OWNER_EMAIL}"' in answered.stdout.replace(" ", ""), answered.stdout
    untrusted = curl(*headers, url)  # the system's CAs only
    assert untrusted.returncode == 60, untrusted  # "SSL certificate problem"
    assert OWNER_EMAIL not in untrusted.stdout


def test_openssl_verifies_the_certificate_for_localhost(server: WakaServer) -> None:
    done = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"localhost:{server.tls_port}",
            "-servername",
            "localhost",
            "-verify_hostname",
            "localhost",
            "-verify_return_error",
            "-CAfile",
            str(ca_file(server)),
            "-showcerts",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "Verify return code: 0 (ok)" in done.stdout, done.stdout
    assert "waka local CA" in done.stdout  # the issuer: waka's own CA

    # A host name the certificate does not carry fails verification.
    wrong = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"localhost:{server.tls_port}",
            "-verify_hostname",
            "not-waka.example",
            "-verify_return_error",
            "-CAfile",
            str(ca_file(server)),
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong.returncode != 0
    assert "hostname mismatch" in (wrong.stdout + wrong.stderr).lower()


def test_plain_http_to_the_tls_port_gets_nothing_and_loopback_http_still_works(
    server: WakaServer,
) -> None:
    request = (
        "GET /account HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {server.api_key}\r\nAccept: application/vnd.heroku+json; "
        "version=3\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert not received.startswith(b"HTTP/"), received[:200]
    assert OWNER_EMAIL.encode() not in received
    # The server is unharmed: TLS still answers, and so does plain HTTP on loopback.
    context = ssl.create_default_context(cafile=str(ca_file(server)))
    with (
        socket.create_connection(("localhost", server.tls_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        assert tls.recv(65536).startswith(b"HTTP/1.1 200"), "no answer over TLS"
    plain = curl(
        "-H", f"Authorization: Bearer {server.api_key}", f"http://127.0.0.1:{server.port}/account"
    )
    assert OWNER_EMAIL in plain.stdout, plain
    assert "Traceback" not in server.log()


def host_address() -> str | None:
    """An address of this host that is not loopback (the one it would reach the world by)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_on_a_network_address_plain_http_stays_on_loopback(tmp_path: Path) -> None:
    """`waka up --host 0.0.0.0`: HTTPS on every address, plain HTTP on loopback only."""
    address = host_address()
    if address is None:
        pytest.skip("this host has no address but loopback")
    api, tls, router, rendezvous, router_tls = (free_port() for _ in range(5))
    log = tmp_path / "up.log"
    command = [sys.executable, "-m", "waka", "up", "--host", "0.0.0.0", "--api-port", str(api)]
    command += ["--api-tls-port", str(tls), "--router-port", str(router)]
    command += ["--rendezvous-port", str(rendezvous), "--router-tls-port", str(router_tls)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=clean_env(WAKA_HOME=str(tmp_path / "home"), WAKA_RUNTIME="process"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        loopback = f"http://127.0.0.1:{api}/account"
        wait_for(lambda: curl(loopback).stdout, timeout=30, what="the API on loopback")
        assert f"waka: API on http://localhost:{api}" in log.read_text()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, api), timeout=5).close()
        # Over the network, TLS answers with waka's certificate, verified against its CA.
        answered = curl(
            "--cacert",
            str(tmp_path / "home" / "tls" / "ca.pem"),
            "--resolve",
            f"localhost:{tls}:{address}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"https://localhost:{tls}/account",
        )
        assert answered.stdout == "401", answered  # no key given: Heroku's 401
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=STOP_TIMEOUT) == 0, log.read_text()


# --- an operator's certificate --------------------------------------------------------------


def test_an_operators_certificate_is_served(
    heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.test_api_tls import self_signed

    tmp = tmp_path_factory.mktemp("operator-cert")
    cert, key = self_signed(tmp / "certs", "localhost")
    env = {"WAKA_API_TLS_CERT": str(cert), "WAKA_API_TLS_KEY": str(key)}
    with running_server(tmp, heroku_cli, env=env) as server:
        assert "certificate from the operator" in server.log()
        answered = curl(
            "--cacert",
            str(cert),
            "-H",
            f"Authorization: Bearer {server.api_key}",
            f"https://localhost:{server.tls_port}/account",
        )
        assert OWNER_EMAIL in answered.stdout, answered
        # waka's own CA does not vouch for it: it is the operator's certificate being served.
        assert curl("--cacert", str(ca_file(server)), https_url(server)).returncode == 60
