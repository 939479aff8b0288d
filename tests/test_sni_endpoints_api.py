"""/apps/{app}/sni-endpoints and PATCH /apps/{app}/domains/{domain}: Heroku's shapes, 422 in
Heroku's error shape for a key that is not the certificate's or a certificate not naming the
domain, the private key in no response, and sealed in the read model when there is a key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from eventsourcing.cipher import AESCipher

from tests.test_api import Api, error_of
from tests.test_router_tls import self_signed
from waka.bootstrap import Platform
from waka.config import Settings


def test_sni_endpoints_shapes_and_refusals(
    settings: Settings, make_platform: Callable[..., Platform]
) -> None:
    platform = make_platform(replace(settings, cipher_key=AESCipher.create_key(num_bytes=32)))
    api = Api(platform)
    assert api.post("/apps", json={"name": "certs-api"}).status_code == 201
    cert, key = self_signed("www.certs.test")
    _, other_key = self_signed("www.certs.test")

    refused = api.post(
        "/apps/certs-api/sni-endpoints", json={"certificate_chain": cert, "private_key": other_key}
    )
    assert error_of(refused) == (
        422,
        "invalid_params",
        "The private key does not match the certificate's public key.",
    )
    assert error_of(api.post("/apps/certs-api/sni-endpoints", json={}))[0] == 422
    assert error_of(api.post("/apps/certs-api/sni-endpoints", json=["x"]))[0] == 422

    made = api.post(
        "/apps/certs-api/sni-endpoints", json={"certificate_chain": cert, "private_key": key}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert key.splitlines()[1] not in made.text  # never the key
    assert body["ssl_cert"]["cert_domains"] == ["www.certs.test"]
    assert body["ssl_cert"]["self_signed?"] is True and body["ssl_cert"]["acm"] is False
    assert body["app"]["name"] == "certs-api" and body["domains"] == []
    name = body["name"]
    assert api.get(f"/apps/certs-api/sni-endpoints/{name}").json()["id"] == body["id"]
    assert [e["name"] for e in api.get("/apps/certs-api/sni-endpoints").json()] == [name]

    assert api.post("/apps/certs-api/domains", json={"hostname": "www.certs.test"}).is_success
    assert api.post("/apps/certs-api/domains", json={"hostname": "api.certs.test"}).is_success
    chosen = api.patch("/apps/certs-api/domains/www.certs.test", json={"sni_endpoint": name})
    assert chosen.json()["sni_endpoint"] == {"id": body["id"], "name": name}
    assert api.get(f"/apps/certs-api/sni-endpoints/{name}").json()["domains"] == [
        chosen.json()["id"]
    ]
    status, error_id, message = error_of(
        api.patch("/apps/certs-api/domains/api.certs.test", json={"sni_endpoint": name})
    )
    assert (status, error_id) == (422, "invalid_params")
    assert (
        message
        == f"The certificate {name} does not cover api.certs.test (it names www.certs.test)."
    )
    assert (
        error_of(
            api.patch("/apps/certs-api/domains/api.certs.test", json={"sni_endpoint": "nope"})
        )[0]
        == 404
    )

    [stored] = platform.store.query("SELECT private_key, sealed FROM waka_sni_endpoints")
    assert stored["sealed"] == 1 and "PRIVATE KEY" not in stored["private_key"]

    assert api.delete(f"/apps/certs-api/sni-endpoints/{name}").status_code == 200
    assert api.get("/apps/certs-api/sni-endpoints").json() == []
    assert api.get("/apps/certs-api/domains/www.certs.test").json()["sni_endpoint"] is None
    assert error_of(api.get(f"/apps/certs-api/sni-endpoints/{name}"))[0] == 404
