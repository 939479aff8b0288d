"""Add-on providers' own state (a server's port and admin password) that every worker must read:
the worker that provisioned an add-on may be dead or on another host when another removes it.

Kept in the platform's shared blob store (PostgreSQL), sealed with the ledger's key like the
read models' secrets; one blob per add-on, written whole.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from waka.adapters.blobs import BlobNotFound, BlobStore, put
from waka.projections.sealing import Sealer


class AddonStates(Protocol):
    def get(self, addon_id: str) -> dict | None: ...

    def put(self, addon_id: str, state: dict) -> None: ...

    def delete(self, addon_id: str) -> None: ...


class SharedAddonStates:
    def __init__(self, blobs: BlobStore, sealer: Sealer, service: str) -> None:
        self.blobs = blobs
        self.sealer = sealer
        self.service = service

    def _key(self, addon_id: str) -> str:
        return f"addon-states/{self.service}/{addon_id}"

    def get(self, addon_id: str) -> dict | None:
        try:
            with self.blobs.read(self._key(addon_id)) as chunks:
                text = b"".join(chunks).decode()
        except BlobNotFound:
            return None
        return orjson.loads(self.sealer.open(text) if self.sealer.enabled else text)

    def put(self, addon_id: str, state: dict) -> None:
        text = orjson.dumps(state).decode()
        sealed = self.sealer.seal(text) if self.sealer.enabled else text
        put(self.blobs, self._key(addon_id), [sealed.encode()])

    def delete(self, addon_id: str) -> None:
        self.blobs.delete(self._key(addon_id))
