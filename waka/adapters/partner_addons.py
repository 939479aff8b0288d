"""Third-party add-ons: a service described by a manifest and provisioned over HTTP by its
provider, in the shape of Heroku's Add-on Partner API (v3).

A manifest (one JSON file per service, in WAKA_ADDON_MANIFESTS):

    {"id": "acme-mail", "name": "ACME Mail",
     "api": {"config_vars_prefix": "ACME_MAIL", "password": "...",
             "production": {"base_url": "https://acme.example/heroku/resources"}},
     "plans": [{"name": "test", "human_name": "Test", "price_cents": 0, "default": true}]}

Provisioning POSTs {"uuid", "plan", "region", "callback_url", "name", "options"} to the base URL
with Basic auth (id, password) and takes {"id", "config", "message"} back; the config's names
start with the prefix (ACME_MAIL_URL), which each attachment replaces with its own name. A plan
change PUTs {"plan"} to base_url/<id>; removal DELETEs it. The provider's resource id and the
config are kept under `root`, so a repeated call sends nothing twice.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from waka.addons.catalogue import Plan, Service
from waka.addons.provider import ProviderError

log = logging.getLogger("waka.addons.partner")

TIMEOUT = 30.0  # seconds per request to the provider


class ManifestError(ValueError):
    """A manifest that cannot describe a service; the message says which field."""


def load_manifest(path: Path, root: Path) -> PartnerProvider:
    """The service and its provider, from one manifest file."""
    try:
        manifest = json.loads(path.read_text())
        api = manifest["api"]
        name, prefix = str(manifest["id"]), str(api["config_vars_prefix"]).upper()
        base_url = str(api["production"]["base_url"]).rstrip("/")
        plans = tuple(
            Plan(
                name=str(p["name"]),
                human_name=str(p.get("human_name") or p["name"]),
                description=str(p.get("description") or ""),
                price_cents=int(p.get("price_cents") or 0),
                limits=dict(p.get("limits") or {}),
                default=bool(p.get("default")),
            )
            for p in manifest["plans"]
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ManifestError(f"{path}: not an add-on manifest ({error!r})") from None
    if not plans or sum(p.default for p in plans) != 1:
        raise ManifestError(f"{path}: give plans, exactly one of them the default")
    if not base_url.startswith(("http://", "https://")):
        raise ManifestError(f"{path}: api.production.base_url must be an http(s) URL")
    service = Service(
        name=name,
        human_name=str(manifest.get("name") or name),
        description=str(manifest.get("description") or ""),
        addon_prefix=name,
        default_attachment=prefix,
        color_prefix=prefix,
        plans=plans,
    )
    return PartnerProvider(service, base_url, name, str(api.get("password") or ""), root / name)


class PartnerProvider:
    def __init__(
        self, service: Service, base_url: str, manifest_id: str, password: str, root: Path
    ) -> None:
        self.service = service
        self.base_url = base_url
        self.prefix = service.default_attachment + "_"
        self.root = root
        token = base64.b64encode(f"{manifest_id}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    def provision(self, addon_id: str, plan: Plan) -> dict[str, str]:
        state = self._load(addon_id)
        if state is not None:
            return dict(state["config"])
        answer = self._call(
            "POST",
            self.base_url,
            {
                "uuid": addon_id,
                "plan": plan.name,
                "region": "local",
                "callback_url": "",
                "name": addon_id,
                "options": {},
            },
        )
        resource, config = answer.get("id"), answer.get("config") or {}
        if not isinstance(resource, str | int) or not isinstance(config, dict):
            raise ProviderError(f"{self.service.name} answered without an id and config")
        suffixes = {}
        for key, value in config.items():
            if not str(key).startswith(self.prefix) or len(str(key)) == len(self.prefix):
                raise ProviderError(
                    f"{self.service.name} gave the config var {key}, not named {self.prefix}*",
                    retryable=False,
                )
            suffixes[str(key)[len(self.prefix) :]] = str(value)
        self._save(addon_id, {"id": str(resource), "plan": plan.name, "config": suffixes})
        return suffixes

    def deprovision(self, addon_id: str) -> None:
        state = self._load(addon_id)
        if state is None:
            return
        self._call("DELETE", f"{self.base_url}/{state['id']}", None, gone_ok=True)
        self._path(addon_id).unlink(missing_ok=True)

    def ensure_running(self, addon_id: str, plan: Plan, config: dict[str, str]) -> None:
        """The provider runs the resource; a plan change is sent to it here."""
        state = self._load(addon_id)
        if state is None or state["plan"] == plan.name:
            return
        self._call("PUT", f"{self.base_url}/{state['id']}", {"plan": plan.name})
        self._save(addon_id, {**state, "plan": plan.name})

    def exists(self, addon_id: str) -> bool:
        return self._path(addon_id).exists()

    def info(self, addon_id: str, plan: Plan) -> list[tuple[str, str]]:
        state = self._load(addon_id) or {}
        return [("Provider", self.base_url), ("Resource", str(state.get("id", "none")))]

    def reset(self, addon_id: str) -> None:
        raise ProviderError(f"{self.service.human_name} cannot be reset", retryable=False)

    # --- the provider's API ----------------------------------------------------------------

    def _call(self, method: str, url: str, body: Any, gone_ok: bool = False) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", self._auth)
        request.add_header("Accept", "application/vnd.heroku-addons+json; version=3")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            if gone_ok and error.code in (404, 410):
                return {}
            detail = _message(error.read())
            raise ProviderError(
                f"{self.service.name} answered {error.code} to {method}: {detail}",
                retryable=error.code >= 500 or error.code == 429,
            ) from None
        except (OSError, TimeoutError) as error:
            raise ProviderError(f"{self.service.name} is unreachable: {error}") from None
        try:
            answer = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ProviderError(f"{self.service.name} answered with no JSON") from None
        return answer if isinstance(answer, dict) else {}

    # --- what we keep of each resource -----------------------------------------------------

    def _path(self, addon_id: str) -> Path:
        if not addon_id.replace("-", "").isalnum():
            raise ProviderError(f"not an add-on id: {addon_id!r}", retryable=False)
        return self.root / f"{addon_id}.json"

    def _load(self, addon_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(addon_id).read_text())
        except FileNotFoundError:
            return None

    def _save(self, addon_id: str, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(addon_id)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(state))
        partial.chmod(0o600)  # it holds the resource's credentials
        partial.replace(path)


def _message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        return str(body.get("message") or body)[:300]
    except ValueError:
        return raw.decode(errors="replace")[:300]
