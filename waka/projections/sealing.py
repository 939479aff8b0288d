"""Sealing: secrets in the read models (config var values, add-on credentials among them)
encrypted with the ledger's own key (WAKA_CIPHER_KEY or the home's key file), so they are
not in clear in the read models' store either.

AES-GCM in the ledger's own format (waka/ledger_cipher.py: OpenSSL's, ~1 µs a value where
pycryptodome's took ~47); a sealed value is stored as base64 text. Its nonce is derived from
the value (a keyed hash, as in AES-SIV), not random: rebuilding the read models from the
ledger then gives the very same rows, at the price of showing which sealed values are equal
(never what they are).
Without a key (a ledger made unencrypted, before encryption was the default),
values pass through unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from eventsourcing.utils import Environment

from waka.ledger_cipher import OpenSSLAESCipher


class Sealer:
    def __init__(self, cipher_key: str | None = None) -> None:
        self._cipher = (
            OpenSSLAESCipher(Environment("waka", {"CIPHER_KEY": cipher_key}))
            if cipher_key
            else None
        )
        key = self._cipher.key if self._cipher else b""
        self._nonce_key = hashlib.sha256(b"waka-seal-nonce:" + key).digest()

    @property
    def enabled(self) -> bool:
        return self._cipher is not None

    def seal(self, value: str) -> str:
        if self._cipher is None:
            return value
        plain = value.encode()
        # One nonce per distinct value (never two values under one nonce): AESCipher's format.
        nonce = hmac.new(self._nonce_key, plain, hashlib.sha256).digest()[:12]
        return base64.b64encode(self._cipher.encrypt_with_nonce(nonce, plain)).decode()

    def open(self, sealed: str) -> str:
        if self._cipher is None:
            raise ValueError("a sealed value, and no cipher key to open it with")
        return self._cipher.decrypt(base64.b64decode(sealed)).decode()
