"""Sealing: secrets in the read models (config var values, add-on credentials among them)
encrypted with the ledger's own key, so WAKA_CIPHER_KEY protects them there too.

AES-GCM through eventsourcing's cipher, as the ledger uses; a sealed value is stored as
base64 text. Without a key, values pass through unchanged.
"""

from __future__ import annotations

import base64

from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment


class Sealer:
    def __init__(self, cipher_key: str | None = None) -> None:
        self._cipher = (
            AESCipher(Environment("waka", {"CIPHER_KEY": cipher_key})) if cipher_key else None
        )

    @property
    def enabled(self) -> bool:
        return self._cipher is not None

    def seal(self, value: str) -> str:
        if self._cipher is None:
            return value
        return base64.b64encode(self._cipher.encrypt(value.encode())).decode()

    def open(self, sealed: str) -> str:
        if self._cipher is None:
            raise ValueError("a sealed value, and no WAKA_CIPHER_KEY to open it with")
        return self._cipher.decrypt(base64.b64decode(sealed)).decode()
