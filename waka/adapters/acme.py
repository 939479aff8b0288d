"""Certificates from an ACME server (Let's Encrypt, or pebble in the tests), HTTP-01 validated.

The protocol is certbot's `acme` library: JWS signing, nonces, the order state machine and its
error documents are easy to get subtly wrong, and certbot's client is what Let's Encrypt itself
keeps working. This module only holds waka's side: the account key (made once, 0600, under
`$WAKA_HOME/acme/`), and the challenge answers the router serves at
`/.well-known/acme-challenge/<token>` while an order is being validated.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("waka.acme")

CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"
ORDER_TIMEOUT = dt.timedelta(seconds=90)


class AcmeError(Exception):
    """An order failed; the message says why, for `heroku certs:auto` (no secret in it)."""


class Challenges:
    """HTTP-01 answers, token -> key authorization, read by the router on its loop."""

    def __init__(self) -> None:
        self._answers: dict[bytes, bytes] = {}

    def put(self, token: str, answer: str) -> None:
        self._answers = {**self._answers, token.encode(): answer.encode()}

    def drop(self, token: str) -> None:
        self._answers = {k: v for k, v in self._answers.items() if k != token.encode()}

    def answer(self, target: bytes) -> bytes | None:
        """The answer for a request target under /.well-known/acme-challenge/, if any."""
        if not target.startswith(CHALLENGE_PREFIX):
            return None
        return self._answers.get(target[len(CHALLENGE_PREFIX) :].partition(b"?")[0])


@dataclass(frozen=True)
class Issued:
    certificate_chain: str  # PEM, the certificate first
    private_key: str  # PEM


class AcmeClient:
    def __init__(
        self,
        directory_url: str,
        home: Path,
        challenges_: Challenges,
        ca_file: Path | None = None,
        email: str | None = None,
    ) -> None:
        self.directory_url = directory_url
        self.home = home
        self.challenges = challenges_
        self.verify: bool | str = str(ca_file) if ca_file else True
        self.email = email
        self._client: client.ClientV2 | None = None
        self._lock = threading.Lock()

    def issue(self, hostname: str) -> Issued:
        """A certificate for `hostname`, validated over HTTP-01 through the router."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with self._lock:
            acme = self._account()
            try:
                order = acme.new_order(crypto_util.make_csr(key_pem, [hostname]))
                tokens = []
                for authz in order.authorizations:
                    http01 = next(
                        (
                            c
                            for c in authz.body.challenges
                            if isinstance(c.chall, challenges.HTTP01)
                        ),
                        None,
                    )
                    if http01 is None:
                        raise AcmeError("the ACME server offered no HTTP-01 challenge")
                    response, validation = http01.response_and_validation(acme.net.key)
                    token = http01.chall.encode("token")
                    self.challenges.put(token, validation)
                    tokens.append(token)
                    acme.answer_challenge(http01, response)
                try:
                    deadline = dt.datetime.now() + ORDER_TIMEOUT
                    order = acme.poll_and_finalize(order, deadline=deadline)
                finally:
                    for token in tokens:
                        self.challenges.drop(token)
            except errors.ValidationError as error:
                raise AcmeError(_validation_reason(error)) from None
            except errors.TimeoutError:
                raise AcmeError("the ACME server did not validate the domain in time") from None
            except messages.Error as error:
                raise AcmeError(f"the ACME server refused: {error.detail or error.typ}") from None
            except (errors.Error, OSError) as error:
                self._client = None  # a new session (and nonce) next time
                raise AcmeError(f"the ACME server could not be reached: {error}") from None
        return Issued(order.fullchain_pem, key_pem.decode())

    def _account(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        key = jose.JWKEC(key=self._account_key())
        net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=self.verify, user_agent="waka")
        directory = client.ClientV2.get_directory(self.directory_url, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True
        )
        try:
            acme.new_account(registration)
        except errors.ConflictError as existing:  # this key has an account already: use it
            net.account = messages.RegistrationResource(
                uri=existing.location, body=messages.Registration()
            )
        self._client = acme
        return acme

    def _account_key(self) -> ec.EllipticCurvePrivateKey:
        """One account key per ACME directory, made once and kept (0600)."""
        directory = self.home / "acme"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = hashlib.sha256(self.directory_url.encode()).hexdigest()[:16]
        path = directory / f"account-{name}.pem"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return key
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        return key


def _validation_reason(error: errors.ValidationError) -> str:
    for authz in error.failed_authzrs:
        for chall in authz.body.challenges:
            if chall.error is not None:
                return f"validation of {authz.body.identifier.value} failed: {chall.error.detail}"
    return "the ACME server could not validate the domain"
