"""The ledger's cipher: eventsourcing's AES-GCM format, computed by OpenSSL.

eventsourcing's `AESCipher` builds a new pycryptodome GCM object for every event it encrypts
or decrypts, which costs ~47 µs (most of it setting up GHASH) on the reference machine; a
write decrypts every event it replays and the projector every event it applies, so this was
a large part of a control-plane write. `cryptography`'s AESGCM (OpenSSL) does the same in
~1 µs. The stored bytes are the same (nonce 12 | tag 16 | ciphertext), so ledgers written by
either read with the other, and `waka cipher-key rotate` (which uses `AESCipher`) still works.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment

TOPIC = "waka.ledger_cipher:OpenSSLAESCipher"
LIBRARY_TOPIC = "eventsourcing.cipher:AESCipher"

_NONCE, _TAG = 12, 16


class OpenSSLAESCipher(AESCipher):
    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)  # checks and decodes the key
        self._aead = AESGCM(self.key)

    def encrypt(self, plaintext: bytes) -> bytes:
        return self.encrypt_with_nonce(AESCipher.random_bytes(_NONCE), plaintext)

    def encrypt_with_nonce(self, nonce: bytes, plaintext: bytes) -> bytes:
        """The caller's nonce (never two plaintexts under one): the read models' sealing."""
        sealed = self._aead.encrypt(nonce, plaintext, None)  # ciphertext | tag
        return nonce + sealed[-_TAG:] + sealed[:-_TAG]

    def decrypt(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) < _NONCE + _TAG:
            raise ValueError("Damaged cipher text: too short for a nonce and a tag")
        nonce, tag = ciphertext[:_NONCE], ciphertext[_NONCE : _NONCE + _TAG]
        try:
            return self._aead.decrypt(nonce, ciphertext[_NONCE + _TAG :] + tag, None)
        except InvalidTag:
            raise ValueError("Cipher text is damaged: MAC check failed") from None
