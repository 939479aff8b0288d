"""What isolates and limits every dyno container (waka/adapters/dyno_containers.py): the slug
owned by the dyno user, its passwd line, the network made once and refused when it lets
containers talk, each size's limits, and R15 in the log when the kernel kills a dyno."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from waka.adapters import dyno_containers
from waka.adapters.dyno_containers import (
    GID,
    NETWORK,
    NO_ICC,
    UID,
    DynoNetworkError,
    address_of,
    container_options,
    dyno_network,
    oom_killed,
    slug_archive,
)
from waka.adapters.dynos import ObservedDyno
from waka.domain import rules
from waka.reactors.dyno_manager import DynoManager


def make_slug(path: Path) -> Path:
    """A slug as waka writes it: a gzip tarball of app/..., every entry root's."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("app/Procfile", b"web: x\n"), ("app/bin/run", b"#!/bin/sh\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("app/run")
        link.type, link.linkname = tarfile.SYMTYPE, "bin/run"
        tar.addfile(link)
    return path


def test_the_slug_stream_belongs_to_the_dyno_user(tmp_path: Path) -> None:
    slug = make_slug(tmp_path / "slug.tgz")
    stream = b"".join(slug_archive(slug, {"etc/passwd": b"root:x:0:0::/root:/bin/sh\n"}))
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(members["app/Procfile"]).read() == b"web: x\n"  # type: ignore[union-attr]
    assert set(members) == {"etc/passwd", "app", "app/Procfile", "app/bin/run", "app/run"}
    assert members["app"].isdir()
    assert members["app/run"].issym() and members["app/run"].linkname == "bin/run"
    assert members["app/bin/run"].mode == 0o755
    for name in ("app", "app/Procfile", "app/bin/run", "app/run"):
        assert (members[name].uid, members[name].gid) == (UID, GID), name
    assert members["etc/passwd"].uid == 0 and members["etc/passwd"].mode == 0o644


def test_the_dyno_user_is_added_once() -> None:
    passwd = b"root:x:0:0::/root:/bin/sh"
    added = dyno_containers._with_line(passwd, "dyno:x:1000:1000::/app:/bin/bash")
    assert added == b"root:x:0:0::/root:/bin/sh\ndyno:x:1000:1000::/app:/bin/bash\n"
    assert dyno_containers._with_line(added, "dyno:x:1:1::/:/bin/sh") == added


class FakeNetwork:
    def __init__(self, name: str, options: dict[str, str], created: str = "1") -> None:
        self.name = name
        self.id = f"id-{name}-{created}"
        self.attrs = {"Options": options, "Created": created}


class FakeNetworks:
    def __init__(self, existing: list[FakeNetwork] | None = None) -> None:
        self.existing = list(existing or [])
        self.created: list[dict[str, Any]] = []

    def list(self, names: list[str]) -> list[FakeNetwork]:  # Docker matches substrings
        return [n for n in self.existing if any(name in n.name for name in names)]

    def create(self, name: str, **options: Any) -> None:
        self.created.append({"name": name, **options})
        self.existing.append(FakeNetwork(name, options["options"]))


class FakeClient:
    def __init__(self, networks: FakeNetworks) -> None:
        self.networks = networks


def test_the_network_is_made_once_without_inter_container_traffic() -> None:
    networks = FakeNetworks([FakeNetwork(f"{NETWORK}-other", {})])
    client = FakeClient(networks)
    first = dyno_network(client)
    assert dyno_network(client) == first  # idempotent: found the second time
    [created] = networks.created
    assert created["name"] == NETWORK and created["options"] == {NO_ICC: "false"}
    assert created["labels"] == {"waka.role": "dyno-network"}
    assert created["check_duplicate"] is True


class RacingNetworks(FakeNetworks):
    """Another waka made the network between our look and our create; or the engine refuses."""

    def __init__(self, made_by_other: bool) -> None:
        super().__init__()
        self.made_by_other = made_by_other

    def create(self, name: str, **options: Any) -> None:
        import docker.errors

        if self.made_by_other:
            self.existing.append(FakeNetwork(name, {NO_ICC: "false"}))
            raise docker.errors.APIError("409 Conflict: network with name exists")
        raise docker.errors.APIError("could not find an available, non-overlapping pool")


def test_a_network_made_meanwhile_is_used_and_a_refusal_says_why() -> None:
    assert dyno_network(FakeClient(RacingNetworks(made_by_other=True))) == f"id-{NETWORK}-1"
    with pytest.raises(DynoNetworkError, match="non-overlapping pool"):
        dyno_network(FakeClient(RacingNetworks(made_by_other=False)))


def test_a_network_that_lets_containers_talk_is_refused() -> None:
    client = FakeClient(FakeNetworks([FakeNetwork(NETWORK, {NO_ICC: "true"})]))
    with pytest.raises(DynoNetworkError, match="talk to each other"):
        dyno_network(client)


def test_of_duplicates_the_oldest_network_is_used() -> None:
    old, new = FakeNetwork(NETWORK, {NO_ICC: "false"}, "1"), FakeNetwork(NETWORK, {}, "2")
    assert dyno_network(FakeClient(FakeNetworks([new, old]))) == old.id


@pytest.mark.parametrize("size", rules.DYNO_SIZES)
def test_every_size_has_limits_and_no_privileges(size: str) -> None:
    client = FakeClient(FakeNetworks([FakeNetwork(NETWORK, {NO_ICC: "false"})]))
    options = container_options(client, size, rules.SIZE_MEMORY_MB[size])
    assert options["user"] == "1000:1000"
    assert options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges"]
    assert options["mem_limit"] == f"{rules.SIZE_MEMORY_MB[size]}m"
    assert options["cpu_shares"] == rules.SIZE_CPU_SHARES[size] >= 1024
    assert options["pids_limit"] == rules.SIZE_PROCESSES[size] >= 256
    assert options["network"] == f"id-{NETWORK}-1"
    assert not {"volumes", "mounts", "privileged", "cap_add"} & set(options)


def test_the_address_on_the_dyno_network_or_the_default_bridge() -> None:
    on_ours = {
        "NetworkSettings": {"IPAddress": "", "Networks": {NETWORK: {"IPAddress": "10.1.0.2"}}}
    }
    assert address_of(on_ours) == "10.1.0.2"
    older = {"NetworkSettings": {"IPAddress": "172.17.0.5", "Networks": {"bridge": {}}}}
    assert address_of(older) == "172.17.0.5"
    assert address_of({"NetworkSettings": {"Networks": {}}}) is None


def test_oom_killed_is_read_from_the_container_state() -> None:
    assert oom_killed({"State": {"OOMKilled": True, "ExitCode": 137}})
    assert not oom_killed({"State": {"OOMKilled": False}})
    assert not oom_killed({})


class RemovedDynos:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def remove(self, container_id: str) -> None:
        self.removed.append(container_id)


def test_a_dyno_killed_at_its_memory_limit_is_logged_as_r15_and_restarted() -> None:
    lines: list[tuple[str, str]] = []
    dynos = RemovedDynos()
    manager = DynoManager(
        None,  # type: ignore[arg-type]  # neither the read models nor the slugs are needed
        None,  # type: ignore[arg-type]
        dynos,  # type: ignore[arg-type]
        log_line=lambda app, source, dyno, message: lines.append((source, message)),
        route=lambda update: None,
    )
    dyno = ObservedDyno(
        container_id="c1",
        app_id="a",
        name="web.1",
        process_type="web",
        command="x",
        release=1,
        generation=0,
        size="Standard-1X",
        running=False,
        exit_code=137,
        address=None,
        created_at="",
        oom_killed=True,
    )
    manager._crashed(dyno)
    assert [message for source, message in lines if source == "heroku"] == [
        "Error R15 (Memory quota vastly exceeded)",
        "Stopping process with SIGKILL",
        "Process exited with status 137",
        "State changed from up to crashed",
    ]
    assert dynos.removed == ["c1"]
    # Restarted: the first crash of a dyno is due again at once.
    assert manager.backoff[("a", "web.1")].crashes == 1
    manager._crashed(replace(dyno, container_id="c2", oom_killed=False))
    assert "Error R15 (Memory quota vastly exceeded)" not in [m for _, m in lines[4:]]
    # A child killed and outlived by the dyno's main process: R15, but no SIGKILL of the dyno.
    del lines[:]
    manager._crashed(replace(dyno, container_id="c3", exit_code=0))
    assert [m for _, m in lines][:2] == [
        "Error R15 (Memory quota vastly exceeded)",
        "Process exited with status 0",
    ]
