"""How the fault suite reads dynos off a Swarm (tests/faults/swarm_seen.py), on made-up API
answers: which service counts as a running dyno, and what the nodes' engines must not hold.
The e2e side (tests/faults/test_swarm.py) varies a real Swarm's state the same way."""

from __future__ import annotations

from typing import Any

from .swarm_seen import containers_problems, leftovers, services_seen

NODES = [
    {"ID": "n1", "Description": {"Hostname": "node1"}, "Status": {"State": "ready"}},
    {"ID": "n2", "Description": {"Hostname": "node2"}, "Status": {"State": "down"}},
]


def service(sid: str, dyno: str = "web.1") -> dict[str, Any]:
    return {"ID": sid, "Spec": {"Labels": {"waka.app": "app-1", "waka.dyno": dyno}}}


def task(sid: str, node: str, state: str, created: str, index: int = 1) -> dict[str, Any]:
    return {
        "ID": f"{sid}-{created}",
        "ServiceID": sid,
        "NodeID": node,
        "CreatedAt": created,
        "Version": {"Index": index},
        "Status": {"State": state},
    }


def test_a_dyno_runs_when_its_newest_task_runs_on_a_ready_node() -> None:
    services = [service("s1"), service("s2", "web.2"), service("s3", "web.3"), service("s4")]
    tasks = [
        task("s1", "n1", "failed", "2026-01-01T00:00:01Z"),
        task("s1", "n1", "running", "2026-01-01T00:00:02Z"),  # the newest: running
        task("s2", "n2", "running", "2026-01-01T00:00:01Z"),  # on a lost node
        task("s3", "n1", "running", "2026-01-01T00:00:01Z"),
        task("s3", "n1", "shutdown", "2026-01-01T00:00:02Z"),  # the newest ended
    ]
    seen = {s.id: s for s in services_seen(services, tasks, NODES)}
    assert seen["s1"].status == "running" and seen["s1"].node == "node1"
    assert seen["s2"].status == "running on node node2 (down)"
    assert seen["s3"].status == "shutdown on node node1 (ready)"
    assert seen["s4"].status == "a service with no task"
    assert seen["s1"].labels == {"waka.app": "app-1", "waka.dyno": "web.1"}


def container(service_id: str, dyno: str, state: str = "running") -> dict[str, Any]:
    labels = {"waka.app": "app-1", "waka.dyno": dyno, "com.docker.swarm.service.id": service_id}
    return {"Labels": labels, "State": state}


def test_a_node_must_run_no_container_of_a_gone_service_and_no_dyno_twice() -> None:
    live = services_seen([service("s1"), service("s2", "web.2")], [], NODES)
    fine = {
        "node1": [container("s1", "web.1"), container("s1", "web.1", "exited")],  # history
        "node2": [container("s2", "web.2")],
    }
    assert containers_problems(live, fine) == []
    gone = {**fine, "node2": [container("s2", "web.2"), container("s9", "web.3")]}
    assert containers_problems(live, gone) == [
        "node node2 has web.3 of app app-1 (running) for service s9, which is gone"
    ]
    # An ended container of a gone service runs nothing: Docker's leftover, reported apart.
    ended = {**fine, "node2": [container("s2", "web.2"), container("s9", "web.3", "exited")]}
    assert containers_problems(live, ended) == []
    assert leftovers(live, ended) == ["node2: web.3 (exited) of service s9"]
    assert leftovers(live, fine) == []
    twice = {**fine, "node2": [container("s2", "web.2"), container("s1", "web.1")]}
    assert containers_problems(live, twice) == ["dyno ('app-1', 'web.1') runs in 2 containers"]
    one_off = {"Labels": {"waka.run": "run.1", "com.docker.swarm.service.id": "s7"}}
    assert "run.1" in containers_problems(live, {"node1": [one_off]})[0]
