"""PostgreSQL restarted under load (`pg_ctl restart -m fast`, then `-m immediate`, a crash of
the server) while config changes stream in through the API and a git push runs.

The platform carries on: a request meets at most a clear 503 in Heroku's error shape while
the server is away (never a 500), and succeeds again once it is back; every acknowledged write
is in the ledger, once; the push, retried as a user would, deploys once; the read models equal
the ledger replayed. The cluster is this module's own, never the machine's shared server."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .convergence import retrying, settle
from .operations import Push, platform_checks
from .postgres_cluster import PostgresCluster
from .test_kill_up import Platform, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

WRITERS = 2
BACK_WITHIN = 8.0  # seconds after the server is back by which writes must succeed again


@pytest.fixture(scope="module")
def platform(
    heroku_cli: Path, own_postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("faults-pg")
    with running_platform(tmp, heroku_cli, own_postgres, split=False) as platform:
        yield platform


class Writer(threading.Thread):
    """Sets config vars one at a time through the API; remembers each answer."""

    def __init__(self, platform: Platform, prefix: str) -> None:
        super().__init__(daemon=True)
        server = platform.deployment.server
        self.app = platform.target.app
        self.prefix = prefix
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{server.port}",
            headers={
                "Accept": "application/vnd.heroku+json; version=3",
                "Authorization": f"Bearer {server.api_key}",
            },
            timeout=30,
        )
        self.answers: list[tuple[float, str, int, str]] = []  # (time, key, status, body)
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            key = f"{self.prefix}_{n}"
            try:
                response = self.client.patch(f"/apps/{self.app}/config-vars", json={key: str(n)})
                answer = (time.monotonic(), key, response.status_code, response.text)
            except httpx.HTTPError as error:
                answer = (time.monotonic(), key, 0, repr(error))
            self.answers.append(answer)
            time.sleep(0.05)
        self.client.close()


def test_postgres_restarted_under_load(platform: Platform, schedule: random.Random) -> None:
    cluster, observer = platform.cluster, platform.observer
    writers = [Writer(platform, f"LOAD{i}") for i in range(WRITERS)]
    for writer in writers:
        writer.start()
    push = Push(platform.target)
    pushing = threading.Thread(target=push.act, daemon=True)
    try:
        time.sleep(schedule.uniform(0.5, 1.5))
        before_fast = observer.events()
        cluster.restart("fast")
        back_fast = time.monotonic()
        time.sleep(schedule.uniform(1.0, 2.0))
        pushing.start()
        time.sleep(schedule.uniform(0.0, 2.0))  # into the push: receive, build or release
        before_crash = observer.events()
        crash_at = time.monotonic()
        cluster.restart("immediate")  # the server crashes: no checkpoint, recovery from WAL
        back_crash = time.monotonic()
        time.sleep(BACK_WITHIN)
    finally:
        for writer in writers:
            writer.stopping.set()
        for writer in writers:
            writer.join(timeout=60)
    pushing.join(timeout=120)

    answers = sorted((a for w in writers for a in w.answers), key=lambda a: a[0])
    statuses = sorted({a[2] for a in answers})
    # Only success, or a clear 503 while the server was away.
    bad = [a for a in answers if a[2] not in (200, 503)]
    assert not bad, f"answers other than 200 or 503: {bad[:5]} (statuses {statuses})"
    for _, _, status, body in answers:
        if status == 503:
            error = httpx.Response(503, content=body).json()
            assert set(error) >= {"id", "message"}, body
    # Writes work again soon after each restart: at once after the fast one (before the
    # crash), and all of them a few seconds after the crash.
    first_ok = [a[0] - back_fast for a in answers if back_fast <= a[0] < crash_at and a[2] == 200]
    assert first_ok, f"no write succeeded in the {crash_at - back_fast:.1f} s after the restart"
    later = [a for a in answers if back_crash + BACK_WITHIN - 3 <= a[0]]
    assert later and all(a[2] == 200 for a in later), (
        f"writes 5 s after the crash: {[(round(a[0] - back_crash, 2), a[2]) for a in later]}"
    )
    acknowledged = {a[1] for a in answers if a[2] == 200}

    # The push: retried by the user if PostgreSQL's restart failed it, then deployed once.
    if not retrying(push.done, timeout=10):  # a git request may meet a dead pooled connection
        push.act()

    def writes_kept() -> list[str]:
        config = platform.target.get(f"/apps/{platform.target.app}/config-vars")
        lost = sorted(acknowledged - set(config))
        releases = platform.target.releases()
        described = [r["description"] for r in releases]
        twice = sorted(
            {d for d in described if d.startswith("Set LOAD") and described.count(d) > 1}
        )
        return [f"acknowledged writes lost: {lost[:5]}"] * bool(lost) + [
            f"releases made twice: {twice[:5]}"
        ] * bool(twice)

    settle(
        [
            observer.no_event_lost(before_fast),
            observer.no_event_lost(before_crash),
            writes_kept,
            *push.checks(),
            *platform_checks(observer, platform.deployment, cluster.url),
        ],
        timeout=90,
        what="PostgreSQL restarted under load",
    )
    print(
        f"postgres restart: {len(answers)} writes, {len(acknowledged)} acknowledged, "
        f"statuses {statuses}"
    )
    assert platform.deployment.roles["up"].process.poll() is None, "waka up died"
