"""Where dynos reach host services: the Docker bridge's address, found even when a freshly
started engine reports the bridge's subnet without a gateway."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from waka.adapters.runtime import bridge_gateway, docker_client, interface_address


def engine(attrs: dict[str, Any] | None) -> Any:
    def get(name: str) -> Any:
        if attrs is None or name != "bridge":
            raise LookupError(name)
        return SimpleNamespace(attrs=attrs)

    return SimpleNamespace(networks=SimpleNamespace(get=get))


def test_the_networks_gateway_when_the_engine_reports_one() -> None:
    attrs = {"IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}}
    assert bridge_gateway(engine(attrs)) == "172.17.0.1"


def test_without_a_gateway_the_bridge_interfaces_own_address() -> None:
    # A fresh engine: subnet, no gateway. The interface named in the options is asked
    # (the loopback interface stands in for docker0 here: it always exists).
    attrs = {
        "IPAM": {"Config": [{"Subnet": "10.99.0.0/16"}]},
        "Options": {"com.docker.network.bridge.name": "lo"},
    }
    assert bridge_gateway(engine(attrs)) == "127.0.0.1"


def test_without_gateway_or_interface_the_subnets_first_host() -> None:
    attrs = {
        "IPAM": {"Config": [{"Subnet": "10.99.0.0/16"}]},
        "Options": {"com.docker.network.bridge.name": "no-such-if0"},
    }
    assert bridge_gateway(engine(attrs)) == "10.99.0.1"


def test_no_bridge_network_no_address() -> None:
    assert bridge_gateway(engine(None)) is None
    assert interface_address("no-such-if0") is None


def test_the_real_engine_gives_an_address_a_container_reaches() -> None:
    client = docker_client()
    if client is None:
        pytest.skip("no Docker engine here")
    address = bridge_gateway(client)
    assert address is not None and not address.startswith("127.")
