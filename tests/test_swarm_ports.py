"""Where a Swarm dyno is reached (waka/adapters/swarm_dynos.py): the node port waka chose,
from the service's spec, on made-up Docker API answers (tests/e2e/test_swarm_dynos.py shows it
on a real Swarm, across a restart of its manager)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from waka.adapters import swarm_dynos
from waka.adapters.swarm_dynos import PUBLISHED_PORTS, SwarmDynos, _port


def service(published: int | None) -> dict[str, Any]:
    port = {"Protocol": "tcp", "TargetPort": 5000, "PublishMode": "host"}
    if published:
        port["PublishedPort"] = published
    return {"ID": "s1", "Spec": {"EndpointSpec": {"Ports": [port]}}}


def task(published: int | None) -> dict[str, Any]:
    ports = [{"TargetPort": 5000, "PublishedPort": published}] if published else []
    return {"Status": {"State": "running", "PortStatus": {"Ports": ports} if ports else {}}}


def test_the_port_is_the_services_own_even_when_the_task_lost_it() -> None:
    assert _port(service(21000), task(None)) == 21000  # a manager that restarted says none
    assert _port(service(21000), task(21000)) == 21000
    assert _port(service(None), task(32768)) == 32768  # made by an older waka: the node's pick
    assert _port(service(None), task(None)) is None


def test_a_free_port_is_one_no_service_of_the_platform_publishes(monkeypatch: Any) -> None:
    taken = [service(p) for p in PUBLISHED_PORTS if p != 25000]
    api = SimpleNamespace(services=lambda filters: taken)
    dynos = SwarmDynos.__new__(SwarmDynos)
    dynos.client = SimpleNamespace(api=api)
    dynos.platform_id = "p1"
    assert dynos._free_port() == 25000
    monkeypatch.setattr(swarm_dynos, "PUBLISHED_PORTS", range(20000, 20010))
    taken[:] = [service(p) for p in range(20000, 20010)]
    try:
        dynos._free_port()
    except RuntimeError as error:
        assert "every port" in str(error)
    else:
        raise AssertionError("no error with every port taken")
