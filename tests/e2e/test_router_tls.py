"""HTTPS at the router (`waka up --router-tls-port`): curl and openssl against the TLS port of a
real `waka up` with a deployed app; certificates added, listed, shown, updated, chosen and
removed with the real Heroku CLI (`certs:*`, `domains:update --cert`)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import (
    WakaServer,
    app_repo,
    flat,
    git_url,
    unique_name,
    wait_for,
)
from .test_git_push import deployed

pytestmark = [pytest.mark.e2e]


# --- helpers (also used by test_acm.py) ---------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def https_get(port: int, host: str, cafile: Path) -> subprocess.CompletedProcess[str]:
    """curl https://HOST:PORT/ with HOST resolved to loopback and only `cafile` trusted."""
    return curl(
        "--cacert", str(cafile), "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/"
    )


def served_certificate(port: int, host: str, cafile: Path | None = None) -> tuple[str, str]:
    """(subject line, verify result line) that `openssl s_client -servername HOST` reports."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", host]
    if cafile is not None:
        args += ["-CAfile", str(cafile), "-verify_hostname", host]
    done = subprocess.run(args, input="", capture_output=True, text=True, timeout=30, check=False)
    out = done.stdout
    subject = next((line for line in out.splitlines() if line.startswith("subject=")), "")
    verify = next((line.strip() for line in out.splitlines() if "Verify return code" in line), "")
    return subject, verify


def deploy_echo(server: WakaServer, tmp_path: Path, prefix: str = "tls") -> str:
    """A deployed header-echo app (it answers with the request head it got, as JSON)."""
    name = unique_name(prefix)
    server.heroku("apps:create", name)
    repo = app_repo("header-echo", tmp_path / name)
    deployed(repo.push(git_url(server, name)), 2)
    host = f"{name}.localhost"
    wait_for(
        lambda: curl(
            "--resolve",
            f"{host}:{server.router_port}:127.0.0.1",
            f"http://{host}:{server.router_port}/",
        ).stdout.startswith("{"),
        timeout=90,
        what=f"{name} answering on the router",
    )
    return name


class Authority:
    """A certificate authority of the test's own, standing for a public one."""

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "waka test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.directory = directory
        self.ca_file = directory / "test-ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, label: str, *names: str, org: str = "waka tests") -> tuple[Path, Path]:
        """(certificate file, key file) for `names`."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=20))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(self.key, hashes.SHA256())
        )
        crt, pem = self.directory / f"{label}.crt", self.directory / f"{label}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        return crt, pem


# --- tests --------------------------------------------------------------------------------------


def test_app_host_over_https_with_waka_ca(server: WakaServer, tmp_path: Path) -> None:
    app = deploy_echo(server, tmp_path)
    host, port = f"{app}.localhost", server.router_tls_port
    ca = server.home / "tls" / "ca.pem"
    assert f"router on https://<app>.localhost:{port}" in server.log()

    done = https_get(port, host, ca)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["x-forwarded-port"] == str(port)
    assert seen["headers"]["host"] == f"{host}:{port}"
    plain = curl(
        "--resolve",
        f"{host}:{server.router_port}:127.0.0.1",
        f"http://{host}:{server.router_port}/",
    )
    assert json.loads(plain.stdout)["headers"]["x-forwarded-proto"] == "http"

    _, verify = served_certificate(port, host, ca)  # -verify_hostname: the name is checked
    assert verify == "Verify return code: 0 (ok)", verify
    # No such app: the handshake gives waka's own certificate, which does not name the host.
    refused = https_get(port, "nosuchapp-x.localhost", ca)
    assert refused.returncode == 60, (refused.returncode, refused.stderr)  # peer verification


def test_certs_add_info_update_domains_update_remove(server: WakaServer, tmp_path: Path) -> None:
    app = deploy_echo(server, tmp_path, "certs")
    port = server.router_tls_port
    ca = Authority(tmp_path)
    www, api = f"www.{app}.test", f"api.{app}.test"
    www_crt, www_key = ca.issue("www", www)
    star_crt, star_key = ca.issue("star", f"*.{app}.test")

    code, out, err = server.heroku("certs", "-a", app)
    assert f"{app} has no SSL certificates" in out

    # A key that is not the certificate's is refused, saying so.
    code, out, err = server.heroku("certs:add", str(www_crt), str(star_key), "-a", app, check=False)
    assert code != 0
    assert "private key does not match the certificate" in flat(err), err

    code, out, err = server.heroku("certs:add", str(www_crt), str(www_key), "-a", app)
    assert www in out and "Expires At" in out, out
    assert "SSL certificate is not trusted." in out  # not ACM's: not known to be CA-signed
    server.heroku("domains:add", www, "-a", app)
    server.heroku("domains:add", api, "-a", app)

    done = wait_for(
        lambda: (r := https_get(port, www, ca.ca_file)).returncode == 0 and r,
        timeout=15,
        what="the router serving the added certificate",
    )
    seen = json.loads(done.stdout)
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["x-forwarded-port"] == str(port)
    subject, verify = served_certificate(port, www, ca.ca_file)
    assert www in subject and verify == "Verify return code: 0 (ok)", (subject, verify)
    assert https_get(port, api, ca.ca_file).returncode == 60  # www's certificate does not cover api

    _, listing, _ = server.heroku("certs", "-a", app)
    rows = [line for line in listing.splitlines() if www in line]
    assert len(rows) == 1 and "SNI" in rows[0], listing
    name = rows[0].split()[0]
    _, info, _ = server.heroku("certs:info", "-a", app)
    assert www in info and "O=waka tests" in info, info

    # The wildcard, chosen for api. with domains:update --cert (certs:add asks which domains
    # otherwise; there is no terminal here).
    server.heroku("certs:add", str(star_crt), str(star_key), "-a", app, check=False)
    _, listing, _ = server.heroku("certs", "-a", app)
    star = next(line.split()[0] for line in listing.splitlines() if f"*.{app}.test" in line)
    code, out, err = server.heroku("domains:update", www, "--cert", name, "-a", app)
    code, out, err = server.heroku("domains:update", api, "--cert", star, "-a", app)
    wait_for(
        lambda: https_get(port, api, ca.ca_file).returncode == 0, timeout=15, what="api. served"
    )
    domains = server.heroku("domains", "-a", app).stdout
    assert star in flat(domains) and name in flat(domains), domains
    # A certificate that does not name the domain is refused for it.
    code, out, err = server.heroku("domains:update", api, "--cert", name, "-a", app, check=False)
    assert code != 0 and f"does not cover {api}" in flat(err), err

    # certs:update: www's endpoint gets a certificate of another organisation; served at once.
    new_crt, new_key = ca.issue("www2", www, org="waka tests renewed")
    server.heroku(
        "certs:update", str(new_crt), str(new_key), "--name", name, "--confirm", app, "-a", app
    )
    wait_for(
        lambda: "waka tests renewed" in served_certificate(port, www)[0],
        timeout=15,
        what="the updated certificate served",
    )

    server.heroku("certs:remove", "--name", name, "--confirm", app, "-a", app)
    wait_for(  # the wildcard, which names www. too, serves it now
        lambda: f"CN = *.{app}.test" in served_certificate(port, www)[0],
        timeout=15,
        what="the wildcard serving www. once its own certificate is removed",
    )
    _, listing, _ = server.heroku("certs", "-a", app)
    assert name not in listing and star in listing
    server.heroku("certs:remove", "--name", star, "--confirm", app, "-a", app)
    wait_for(
        lambda: https_get(port, www, ca.ca_file).returncode == 60,
        timeout=15,
        what="no certificate of the app served once all are removed",
    )
    assert "has no SSL certificates" in server.heroku("certs", "-a", app).stdout

    # The keys are secrets: never in waka's log, nor in the audit.
    log = server.log()
    for key in (www_key, star_key, new_key):
        body = key.read_text().splitlines()[1]
        assert body not in log
        assert body not in server.waka("audit").stdout
