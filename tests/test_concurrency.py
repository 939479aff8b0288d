"""Parallel writers on one ledger: optimistic concurrency with retry loses no update."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from waka.domain.app import App
from waka.domain.errors import NameTaken
from waka.domain.names import AppName
from waka.projections.config_vars import config_of
from waka.projections.releases import releases_of

THREADS = 8
WRITES_PER_THREAD = 5


def run_together(count, work):
    """Run work(i) for i in range(count) on as many threads, released at the same moment.

    Returns (results, errors), each a dict by i.
    """
    barrier = threading.Barrier(count)
    results, errors = {}, {}

    def run(i):
        barrier.wait(timeout=30)
        try:
            results[i] = work(i)
        except Exception as exc:
            errors[i] = exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        for future in [pool.submit(run, i) for i in range(count)]:
            future.result(timeout=120)
    return results, errors


def test_parallel_config_writers_lose_no_update(platform, actor):
    ledger = platform.ledger
    app = ledger.create_app(actor, "busy-app")

    def writer(i):
        for j in range(WRITES_PER_THREAD):
            ledger.set_config(actor, app.id, {f"T{i}_K{j}": f"{i}-{j}"})

    _, errors = run_together(THREADS, writer)
    assert errors == {}

    total = THREADS * WRITES_PER_THREAD
    expected_config = {
        f"T{i}_K{j}": f"{i}-{j}" for i in range(THREADS) for j in range(WRITES_PER_THREAD)
    }
    expected_versions = list(range(1, total + 2))  # v1 plus one release per write

    # The aggregate, replayed from the ledger.
    loaded = ledger.get_app(app.id)
    assert loaded.config == expected_config
    assert loaded.current_release == total + 1
    assert len(loaded.release_positions) == total + 1
    released = [e for e in ledger.events.get(app.id) if isinstance(e, App.Released)]
    assert [e.version for e in released] == expected_versions
    changed = [e for e in ledger.events.get(app.id) if isinstance(e, App.ConfigChanged)]
    assert len(changed) == total
    # Each release follows its own config change, in the stream.
    assert [e.originator_version for e in released[1:]] == [
        e.originator_version + 1 for e in changed
    ]

    # The read models, caught up.
    platform.projector.catch_up()
    releases = releases_of(platform.store, str(app.id))
    assert [r["version"] for r in releases] == expected_versions
    assert len({r["id"] for r in releases}) == total + 1
    assert config_of(platform.store, str(app.id)) == expected_config


@pytest.mark.parametrize("round_", range(3))
def test_racing_creators_of_one_name_exactly_one_wins(platform, make_actor, round_):
    actors = [make_actor(f"racer{i}@example.com") for i in range(2)]
    name = f"race-app-{round_}"

    results, errors = run_together(2, lambda i: platform.ledger.create_app(actors[i], name))

    assert len(results) == 1, errors
    assert len(errors) == 1
    [error] = errors.values()
    assert isinstance(error, NameTaken), repr(error)
    [winner] = results.values()
    [winner_index] = results

    assert platform.ledger.repository.get(AppName.id_for(name)).app_id == winner.id
    assert platform.ledger.get_app(winner.id).owner == actors[winner_index]
    # The loser stored nothing: one app was created in the whole ledger.
    notifications = platform.ledger.recorder.select_notifications(start=1, limit=1000)
    created = [n for n in notifications if n.topic.endswith("App.Created")]
    assert len(created) == 1
    platform.projector.catch_up()
    rows = platform.store.query("SELECT id, owner_id FROM waka_apps WHERE name = ?", (name,))
    assert rows == [{"id": str(winner.id), "owner_id": actors[winner_index]["id"]}]


def test_parallel_creators_of_different_names_all_win(platform, actor):
    results, errors = run_together(THREADS, lambda i: platform.ledger.create_app(actor, f"app-{i}"))
    assert errors == {}
    assert sorted(a.name for a in results.values()) == sorted(f"app-{i}" for i in range(THREADS))
    platform.projector.catch_up()
    assert platform.store.query("SELECT count(*) AS n FROM waka_apps")[0]["n"] == THREADS
