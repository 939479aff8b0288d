"""The API's HTTPS certificate: names from waka's CA, an operator's pair, and the pairs
`waka up` refuses before it listens. tests/e2e/test_https.py drives the real CLI, git, curl
and openssl against it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import free_port
from waka.api.tls import TlsSetupError, api_certificate, host_names
from waka.config import Settings

REPO = Path(__file__).resolve().parents[1]


def sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*names.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in names.get_values_for_type(x509.IPAddress)
    }


def self_signed(directory: Path, name: str, password: bytes | None = None) -> tuple[Path, Path]:
    """An operator's certificate for `name` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return cert_path, key_path


def test_wakas_ca_certifies_every_name_the_api_answers_as(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, public_host="waka.example.test")
    certificate = api_certificate(settings, "192.0.2.10")
    assert certificate.issuer == "waka's CA"
    assert certificate.ca_file == tmp_path / "tls" / "ca.pem"
    assert sans(certificate.certfile) == {
        "localhost",
        "127.0.0.1",
        "::1",
        "waka.example.test",
        "192.0.2.10",
    }
    ca = x509.load_pem_x509_certificate(certificate.ca_file.read_bytes())
    x509.load_pem_x509_certificate(certificate.certfile.read_bytes()).verify_directly_issued_by(ca)
    # The same certificate serves `heroku run` (one CA, one server certificate to trust).
    assert certificate.certfile == tmp_path / "tls" / "server.pem"


def test_a_wildcard_listen_address_is_no_name_in_the_certificate(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert host_names(settings, "0.0.0.0") == ["127.0.0.1", "::1", "localhost"]
    assert host_names(settings, "::") == ["127.0.0.1", "::1", "localhost"]
    assert "[fd00::5]" not in host_names(settings, "[fd00::5]")
    assert sans(api_certificate(settings, "0.0.0.0").certfile) == {"localhost", "127.0.0.1", "::1"}


def test_an_operators_certificate_is_used_as_given(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "operator", "waka.example.org")
    settings = Settings(home=tmp_path / "home", api_tls_cert=cert, api_tls_key=key)
    certificate = api_certificate(settings, "localhost")
    assert (certificate.certfile, certificate.keyfile) == (cert, key)
    assert certificate.issuer == "the operator" and certificate.ca_file is None
    assert not (tmp_path / "home" / "tls" / "server.pem").exists()  # no certificate of ours


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "WAKA_HOME": str(tmp_path),
            "WAKA_API_TLS_PORT": "6443",
            "WAKA_API_TLS_CERT": str(tmp_path / "c.pem"),
            "WAKA_API_TLS_KEY": str(tmp_path / "c.key"),
            "WAKA_PUBLIC_HOST": "waka.example.org",
        }
    )
    assert settings.api_tls_port == 6443
    assert (settings.api_tls_cert, settings.api_tls_key) == (tmp_path / "c.pem", tmp_path / "c.key")
    assert settings.api_tls_url == "https://waka.example.org:6443"
    assert Settings.from_env({"WAKA_HOME": str(tmp_path)}).api_tls_port == 5443
    assert Settings(home=tmp_path, api_tls_port=0).api_tls_url is None


def test_urls_handed_out_are_https_for_a_public_host(tmp_path: Path) -> None:
    public = Settings(home=tmp_path, public_host="waka.example.org")
    assert public.git_url("shop") == "https://waka.example.org:5443/shop.git"
    assert public.api_url == "https://waka.example.org:5443"
    # On loopback, plain HTTP answers too: local URLs stay as they were.
    assert Settings(home=tmp_path).git_url("shop") == "http://localhost:5000/shop.git"
    assert Settings(home=tmp_path, public_host="::1").api_tls_url == "https://[::1]:5443"
    plain = Settings(home=tmp_path, public_host="waka.example.org", api_tls_port=0)
    assert plain.git_url("shop") == "http://waka.example.org:5000/shop.git"


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("mismatch", "is not the key of the certificate"),
        ("cert only", "go together"),
        ("missing key", "no such file"),
        ("not pem", "are not a PEM certificate"),
        ("encrypted", "is encrypted"),
    ],
)
def test_a_bad_pair_is_refused_saying_why(tmp_path: Path, problem: str, message: str) -> None:
    cert, key = self_signed(tmp_path, "one.example")
    other_cert, other_key = self_signed(tmp_path, "other.example", b"secret" * 2)
    pair: tuple[Path | None, Path | None] = {
        "mismatch": (cert, self_signed(tmp_path / "x", "two.example")[1]),
        "cert only": (cert, None),
        "missing key": (cert, tmp_path / "absent.key"),
        "not pem": (tmp_path / "garbage.pem", key),
        "encrypted": (other_cert, other_key),
    }[problem]
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    settings = Settings(home=tmp_path, api_tls_cert=pair[0], api_tls_key=pair[1])
    with pytest.raises(TlsSetupError, match=message):
        api_certificate(settings, "localhost")


def test_waka_up_refuses_a_mismatched_pair_before_it_listens(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "one.example")
    _, key = self_signed(tmp_path, "two.example")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WAKA_")},
        "WAKA_HOME": str(tmp_path / "home"),
        "WAKA_API_TLS_CERT": str(cert),
        "WAKA_API_TLS_KEY": str(key),
        "PYTHONPATH": str(REPO),
    }
    ports = [str(free_port()) for _ in range(4)]
    command = ["up", "--api-port", ports[0], "--router-port", ports[1], "--api-tls-port", ports[2]]
    command += ["--router-tls-port", ports[3]]  # not 8443, which a parallel test may hold
    done = subprocess.run(
        [sys.executable, "-m", "waka", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 1, done
    assert "cannot serve the API over HTTPS" in done.stderr
    assert f"WAKA_API_TLS_KEY={key} is not the key of the certificate" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "home" / "ledger.sqlite").exists()  # stopped before the ledger
