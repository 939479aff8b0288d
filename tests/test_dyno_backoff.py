"""The dyno manager's crash back-off belongs to one dyno of one release: a dyno that keeps
crashing waits longer and longer, but the next release's dyno starts at once.

The dyno manager runs on the real read models and slug store; only the container engine is a
fake that starts, lists and removes dynos in memory (and crashes them on request)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.deploys import deploy
from waka.adapters.dynos import DynoSpec, ObservedDyno
from waka.bootstrap import Platform
from waka.domain.actors import Actor
from waka.reactors.dyno_manager import DynoManager, RouteUpdate


class FakeDynos:
    """Dynos in memory. Every web dyno "listens" on one real socket, so it boots at once."""

    kind = "fake dynos"

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.started: list[DynoSpec] = []
        self.containers: dict[str, ObservedDyno] = {}
        self._ids = itertools.count(1)

    def start(self, spec: DynoSpec) -> str:
        container_id = f"c{next(self._ids)}"
        self.started.append(spec)
        self.containers[container_id] = ObservedDyno(
            container_id=container_id,
            app_id=spec.app_id,
            name=spec.name,
            process_type=spec.process_type,
            command=spec.command,
            release=spec.release,
            generation=spec.generation,
            size=spec.size,
            running=True,
            exit_code=None,
            address=self.address,
            created_at="",
        )
        return container_id

    def crash(self, name: str) -> None:
        (found,) = [c for c in self.containers.values() if c.name == name and c.running]
        self.containers[found.container_id] = replace(
            found, running=False, exit_code=1, address=None
        )

    def list(self) -> list[ObservedDyno]:
        return list(self.containers.values())

    def stop(self, container_id: str, timeout: int = 10) -> int | None:
        self.containers.pop(container_id, None)
        return 0

    def remove(self, container_id: str) -> None:
        self.containers.pop(container_id, None)

    def follow_output(self, container_id: str, on_line: Callable[[str], None], **_: object) -> None:
        pass

    def shutdown(self) -> None:
        pass


@pytest.fixture
def listening() -> Iterator[tuple[str, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()


def test_a_new_release_starts_at_once_after_the_old_dyno_crashed(
    platform: Platform, actor: Actor, listening: tuple[str, int], tmp_path: Path
) -> None:
    (tmp_path / "slug").mkdir()
    slug = platform.slugs.create(tmp_path / "slug")
    app = platform.ledger.create_app(actor, "shop")
    deploy(platform.ledger, actor, app.id, {"web": "python app.py"}, slug_id=slug.id)  # v2
    platform.projector.catch_up()

    dynos = FakeDynos(listening)
    lines: list[tuple[str, str]] = []
    routes: list[RouteUpdate] = []
    manager = DynoManager(
        platform.store,
        platform.slugs,
        dynos,  # type: ignore[arg-type]
        log_line=lambda app_id, source, dyno, message: lines.append((dyno, message)),
        route=routes.append,
    )

    def releases_started() -> list[int]:
        return [s.release for s in dynos.started]

    manager.tick()
    assert releases_started() == [2]
    manager.tick()  # it binds: up and routed
    assert routes[-1].backends and not routes[-1].crashed

    # v2's web.1 crashes: restarted at once the first time, then with back-off.
    dynos.crash("web.1")
    manager.tick()
    assert releases_started() == [2, 2]
    dynos.crash("web.1")
    manager.tick()
    assert releases_started() == [2, 2]  # waiting out its back-off (1 s)
    assert routes[-1].crashed and not routes[-1].backends  # H10 while none serves
    manager.tick()
    assert releases_started() == [2, 2]

    # A new release (a fix deployed): its web.1 is a new dyno, started on the next tick.
    deploy(platform.ledger, actor, app.id, {"web": "python fixed.py"}, slug_id=slug.id)  # v3
    platform.projector.catch_up()
    manager.tick()
    assert releases_started() == [2, 2, 3]
    assert dynos.started[-1].command == "python fixed.py"
    manager.tick()  # it binds: up and routed, no longer "crashed"
    assert routes[-1].backends and not routes[-1].crashed
    assert ("web.1", "State changed from starting to up") in lines

    # Its own crashes count from zero: the first restarts it at once.
    dynos.crash("web.1")
    manager.tick()
    assert releases_started() == [2, 2, 3, 3]


def test_a_restart_also_starts_a_dyno_in_back_off_at_once(
    platform: Platform, actor: Actor, listening: tuple[str, int], tmp_path: Path
) -> None:
    (tmp_path / "slug").mkdir()
    slug = platform.slugs.create(tmp_path / "slug")
    app = platform.ledger.create_app(actor, "shop")
    deploy(platform.ledger, actor, app.id, {"web": "python app.py"}, slug_id=slug.id)
    platform.projector.catch_up()
    dynos = FakeDynos(listening)
    manager = DynoManager(
        platform.store,
        platform.slugs,
        dynos,  # type: ignore[arg-type]
        log_line=lambda *args: None,
        route=lambda update: None,
    )
    manager.tick()
    for _ in range(2):
        dynos.crash("web.1")
        manager.tick()
    assert len(dynos.started) == 2  # the second crash waits

    platform.ledger.restart_dynos(actor, app.id, "web")  # `heroku ps:restart web`
    platform.projector.catch_up()
    manager.tick()
    assert len(dynos.started) == 3
    assert dynos.started[-1].generation == dynos.started[0].generation + 1
