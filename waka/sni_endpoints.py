"""Commands on SNI endpoints (an app's certificates): each checks, then records ledger events.

The API (`heroku certs:*`, `domains:update --cert`) and the ACM reactor both come here, so a
certificate is checked the same way whoever brings it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from waka.domain.acm import ACM_ACTOR, AutomatedCertificates
from waka.domain.actors import Actor
from waka.domain.certificate import (
    CertificateInfo,
    SniEndpoint,
    check_certificate,
    new_endpoint_name,
    parse_chain,
)
from waka.domain.errors import InvalidParams, NotFound
from waka.ledger import retry_on_conflict


def get_endpoint(ledger: Any, endpoint_id: UUID, app_id: UUID) -> SniEndpoint:
    try:
        endpoint = ledger.repository.get(endpoint_id)
    except AggregateNotFoundError:
        raise NotFound("Couldn't find that SNI endpoint.") from None
    if not isinstance(endpoint, SniEndpoint) or endpoint.app_id != app_id or endpoint.removed:
        raise NotFound("Couldn't find that SNI endpoint.")
    return endpoint


def add_endpoint(
    ledger: Any,
    actor: Actor,
    app_id: UUID,
    chain: object,
    key: object,
    *,
    acm: bool = False,
    taken: frozenset[str] = frozenset(),
) -> tuple[SniEndpoint, CertificateInfo]:
    """A new endpoint for the app; `taken`: the app's endpoint names, for a name not among them."""
    info = check_certificate(chain, key)
    app = ledger.get_app(app_id)
    if app.destroyed:
        raise NotFound("Couldn't find that app.")
    if not acm:  # ACM's certificates are the platform's doing
        app.check_access(actor, team_roles=ledger.team_roles(app))
    name = new_endpoint_name()
    while name in taken:
        name = new_endpoint_name()
    endpoint = SniEndpoint(
        app_id=app_id,
        name=name,
        certificate_chain=str(chain).strip() + "\n",
        private_key=str(key).strip() + "\n",
        actor=actor,
        acm=acm,
    )
    ledger.save(endpoint)
    return endpoint, info


@retry_on_conflict
def update_endpoint(
    ledger: Any, actor: Actor, app_id: UUID, endpoint_id: UUID, chain: object, key: object
) -> tuple[SniEndpoint, CertificateInfo]:
    info = check_certificate(chain, key)
    endpoint = get_endpoint(ledger, endpoint_id, app_id)
    endpoint.update(str(chain).strip() + "\n", str(key).strip() + "\n", actor)
    ledger.save(endpoint)
    return endpoint, info


@retry_on_conflict
def remove_endpoint(ledger: Any, actor: Actor, app_id: UUID, endpoint_id: UUID) -> SniEndpoint:
    endpoint = get_endpoint(ledger, endpoint_id, app_id)
    endpoint.remove(actor)
    ledger.save(endpoint)
    return endpoint


@retry_on_conflict
def set_domain_endpoint(
    ledger: Any,
    actor: Actor,
    app_id: UUID,
    hostname: str,
    endpoint_id: UUID | None,
    current_id: UUID | None,
) -> None:
    """Serve `hostname` with the endpoint's certificate (None: with none chosen), refusing a
    certificate that does not name the domain."""
    changed = []
    if endpoint_id is not None:
        endpoint = get_endpoint(ledger, endpoint_id, app_id)
        if not parse_chain(endpoint.certificate_chain).covers(hostname):
            names = ", ".join(parse_chain(endpoint.certificate_chain).cert_domains)
            raise InvalidParams(
                f"The certificate {endpoint.name} does not cover {hostname} (it names {names})."
            )
        endpoint.attach_domain(hostname, actor)
        changed.append(endpoint)
    if current_id is not None and current_id != endpoint_id:
        try:
            current = get_endpoint(ledger, current_id, app_id)
        except NotFound:
            current = None
        if current is not None:
            current.detach_domain(hostname, actor)
            changed.append(current)
    if changed:
        ledger.save(*changed)


# --- Automated Certificate Management ---------------------------------------------------------


def _acm(ledger: Any, app_id: UUID) -> AutomatedCertificates | None:
    try:
        return ledger.repository.get(AutomatedCertificates.id_for(app_id))
    except AggregateNotFoundError:
        return None


@retry_on_conflict
def set_acm(ledger: Any, actor: Actor, app_id: UUID, enabled: bool) -> None:
    """`heroku certs:auto:enable` / `disable`: the ACM reactor does the rest."""
    app = ledger.get_app(app_id)
    if app.destroyed:
        raise NotFound("Couldn't find that app.")
    app.check_access(actor, team_roles=ledger.team_roles(app))
    acm = _acm(ledger, app_id)
    if acm is None:
        if enabled:
            ledger.save(AutomatedCertificates(app_id=app_id, actor=actor))
        return
    acm.enable(actor) if enabled else acm.disable(actor)
    ledger.save(acm)


@retry_on_conflict
def refresh_acm(ledger: Any, actor: Actor, app_id: UUID) -> None:
    acm = _acm(ledger, app_id)
    if acm is None or not acm.enabled:
        raise InvalidParams("Automated Certificate Management is not enabled on this app.")
    acm.refresh(actor)
    ledger.save(acm)


@retry_on_conflict
def record_acm_result(
    ledger: Any, app_id: UUID, hostname: str, endpoint_id: str = "", expires_at: str = "",
    reason: str = "",
) -> None:  # fmt: skip
    """The reactor's outcome for one domain: issued (an endpoint) or failed (a reason)."""
    acm = _acm(ledger, app_id)
    if acm is None or not acm.enabled:
        return  # disabled meanwhile: the outcome no longer matters
    if reason:
        acm.failed(hostname=hostname, reason=reason, actor=ACM_ACTOR)
    else:
        acm.issued(
            hostname=hostname, endpoint_id=endpoint_id, expires_at=expires_at, actor=ACM_ACTOR
        )
    ledger.save(acm)
