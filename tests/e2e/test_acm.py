"""Automated Certificate Management end to end: a real ACME server (pebble, with
pebble-challtestsrv as its DNS server resolving every name to 127.0.0.1) validates HTTP-01
through the router of a real `waka up`; the real Heroku CLI switches ACM on and off and shows
its status; curl verifies the certificate the router then serves against pebble's root."""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    WakaServer,
    flat,
    free_port,
    in_ci,
    running_server,
    wait_for,
)
from .test_router_tls import Authority, deploy_echo, https_get

pytestmark = [pytest.mark.e2e]


class Pebble:
    """pebble and pebble-challtestsrv on free ports, fresh (pebble keeps all in memory)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.management_port = free_port()
        self.dns_port = free_port()
        self.dns_management_port = free_port()
        authority = Authority(directory)  # pebble's own HTTPS certificate comes from it
        self.ca_file = authority.ca_file
        self.cert, self.key = authority.issue("pebble", "localhost", "127.0.0.1")
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def start(self, http_port: int) -> None:
        """Start both; HTTP-01 validations go to `http_port` (the router's) on 127.0.0.1."""
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(self.cert),
                "privateKey": str(self.key),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (self.directory / "pebble.json").write_text(json.dumps(config))
        log = (self.directory / "pebble.log").open("ab")
        self.processes.append(
            subprocess.Popen(
                [
                    "pebble-challtestsrv",
                    "-defaultIPv4",
                    "127.0.0.1",
                    "-defaultIPv6",
                    "",
                    "-dns01",
                    f"127.0.0.1:{self.dns_port}",
                    "-management",
                    f"127.0.0.1:{self.dns_management_port}",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        self.processes.append(
            subprocess.Popen(
                [
                    "pebble",
                    "-config",
                    str(self.directory / "pebble.json"),
                    "-dnsserver",
                    f"127.0.0.1:{self.dns_port}",
                ],
                env={
                    "PATH": "/usr/bin:/bin",
                    "PEBBLE_VA_NOSLEEP": "1",  # validate at once, not after a random pause
                    "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce refusals
                    "PEBBLE_AUTHZREUSE": "0",
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_for(self._up, timeout=20, what="pebble answering")

    def _up(self) -> bool:
        try:
            self.get(self.directory_url)
        except OSError:
            return False
        return True

    def get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.read()

    def root(self) -> Path:
        """The root pebble issues certificates under (made at its start)."""
        path = self.directory / "pebble-root.pem"
        path.write_bytes(self.get(f"https://localhost:{self.management_port}/roots/0"))
        return path

    def dns(self, action: str, body: dict) -> None:
        """pebble-challtestsrv's management API: add-a, clear-a, ..."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.dns_management_port}/{action}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def acme_server(directory: Path) -> Iterator[Pebble]:
    if not (shutil.which("pebble") and shutil.which("pebble-challtestsrv")):
        message = "pebble and pebble-challtestsrv are not installed (scripts/test-deps does it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    pebble = Pebble(directory)
    try:
        yield pebble
    finally:
        pebble.stop()


@pytest.fixture(scope="module")
def acm(
    heroku_cli: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WakaServer, Pebble]]:
    """`waka up` whose ACME directory is a pebble started for it (on the router's HTTP port)."""
    with acme_server(tmp_path_factory.mktemp("pebble")) as pebble:
        env = {
            "WAKA_ACME_DIRECTORY": pebble.directory_url,
            "WAKA_ACME_CA_FILE": str(pebble.ca_file),
        }
        with running_server(tmp_path_factory.mktemp("waka"), heroku_cli, env) as server:
            pebble.start(server.router_port)
            yield server, pebble


def test_certs_auto_issues_serves_and_removes(
    acm: tuple[WakaServer, Pebble], tmp_path: Path
) -> None:
    server, pebble = acm
    app = deploy_echo(server, tmp_path, "acm")
    www = f"www.{app}.test"
    server.heroku("domains:add", www, "-a", app)
    assert (
        "Automatic Certificate Management is disabled"
        in server.heroku("certs:auto", "-a", app).stdout
    )

    server.heroku("certs:auto:enable", "-a", app)
    status = wait_for(
        lambda: "Cert issued" in (out := server.heroku("certs:auto", "-a", app).stdout) and out,
        timeout=90,
        what="ACM issuing the certificate",
    )
    assert "Automatic Certificate Management is enabled" in status
    assert www in status
    domains = server.heroku("domains", "--extended", "-a", app).stdout  # with ACM Status
    assert "cert issued" in flat(domains).lower(), domains

    root = pebble.root()
    done = https_get(server.router_tls_port, www, root)  # a certificate pebble's root vouches for
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["x-forwarded-port"] == str(server.router_tls_port)
    listing = server.heroku("certs", "-a", app).stdout
    assert "ACM" in listing and www in listing, listing
    assert "ACM: certificate for " + www + " issued" in server.log()

    # A restart resumes from the ledger: the certificate is still there and not ordered again.
    server.stop()
    server.start(same_ports=True)
    assert https_get(server.router_tls_port, www, root).returncode == 0
    assert server.log().count(f"ACM: ordering a certificate for {www}") == 1

    server.heroku("certs:auto:disable", "--confirm", app, "-a", app)
    wait_for(
        lambda: https_get(server.router_tls_port, www, root).returncode == 60,
        timeout=30,
        what="ACM's certificate removed once ACM is off",
    )
    assert "has no SSL certificates" in server.heroku("certs", "-a", app).stdout
    # The certificate's key is a secret: never in waka's log.
    assert "PRIVATE KEY" not in server.log()


def test_a_domain_that_fails_validation_shows_why_and_refresh_retries(
    acm: tuple[WakaServer, Pebble], tmp_path: Path
) -> None:
    server, pebble = acm
    app = deploy_echo(server, tmp_path, "acmfail")
    www = f"www.{app}.test"
    # The ACME server's DNS sends this name where nothing listens: validation fails.
    pebble.dns("add-a", {"host": f"{www}.", "addresses": ["127.0.0.2"]})
    server.heroku("domains:add", www, "-a", app)
    server.heroku("certs:auto:enable", "-a", app)
    status = wait_for(
        lambda: "Failing" in (out := server.heroku("certs:auto", "-a", app).stdout) and out,
        timeout=90,
        what="ACM reporting the failed validation",
    )
    assert "Some domains are failing validation" in flat(status), status
    assert "127.0.0.2" in flat(status) or "refused" in flat(status).lower(), status
    assert "ACM: no certificate for " + www in server.log()

    pebble.dns("clear-a", {"host": f"{www}."})  # DNS fixed: back to 127.0.0.1, the router
    server.heroku("certs:auto:refresh", "-a", app)
    wait_for(
        lambda: "Cert issued" in server.heroku("certs:auto", "-a", app).stdout,
        timeout=90,
        what="ACM issuing after the refresh",
    )
    assert https_get(server.router_tls_port, www, pebble.root()).returncode == 0
