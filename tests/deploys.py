"""A deploy recorded straight in the ledger, for tests that need an app with a slug (scaling
needs process types, as on Heroku) but not a real build."""

from __future__ import annotations

from typing import Any
from uuid import UUID

WEB_AND_WORKER = {"web": "python app.py", "worker": "python work.py"}


def deploy(
    ledger: Any,
    actor: dict[str, str],
    app_id: UUID,
    process_types: dict[str, str] | None = None,
    slug_id: str = "slug-1",
) -> int:
    """Request a build and finish it with a slug declaring `process_types` (default web and
    worker); returns the release version ("Deploy")."""
    build_id = ledger.request_build(actor, app_id, "http://127.0.0.1/source.tgz")
    slug = {
        "id": slug_id,
        "process_types": dict(process_types or WEB_AND_WORKER),
        "commit": "",
        "checksum": "SHA256:0",
        "size": 1,
    }
    version = ledger.finish_build(app_id, build_id, slug, None, actor)
    assert version is not None
    return version
