"""Snapshots of long app ledgers: taken every SNAPSHOT_INTERVAL events, and invisible in state.

About 1,000 events here, to keep the suite quick; the benchmark drives 10,000.
"""

from typing import ClassVar

import pytest

from waka.domain.app import App
from waka.ledger import SNAPSHOT_INTERVAL, Ledger

CHANGES = 500  # each config change is two events: ConfigChanged + Released


class PlainLedger(Ledger):
    """The same ledger (same name, so same tables and env prefix), without snapshots."""

    name = "waka"
    is_snapshotting_enabled = False
    snapshotting_intervals: ClassVar = {}


def change(i):
    """The i-th config change (made as release v(i + 1))."""
    return {"N": str(i), f"K{i % 7}": f"v{i}", "BIG": "x" * (i % 50)}


def expected_config_at(release):
    config = {}
    for i in range(1, release):
        config.update(change(i))
    return config


@pytest.fixture
def long_app(platform, actor):
    ledger = platform.ledger
    app = ledger.create_app(actor, "long-app")
    for i in range(1, CHANGES + 1):
        ledger.set_config(actor, app.id, change(i))
    return app


@pytest.fixture
def plain_ledger(platform):
    # The platform's settings: they hold the cipher key its first start made.
    env = platform.settings.eventsourcing_env()
    ledger = PlainLedger(env={**env, "IS_SNAPSHOTTING_ENABLED": "n"})
    assert ledger.snapshots is None
    yield ledger
    ledger.close()


def snapshots_of(ledger, app_id):
    return list(ledger.snapshots.get(app_id))


def test_snapshots_are_taken_every_interval(platform, long_app):
    ledger = platform.ledger
    assert ledger.snapshots is not None
    last_version = 2 + 2 * CHANGES
    [latest] = list(ledger.snapshots.get(long_app.id, desc=True, limit=1))
    assert latest.originator_version == last_version - last_version % SNAPSHOT_INTERVAL
    versions = [s.originator_version for s in snapshots_of(ledger, long_app.id)]
    assert versions == list(range(SNAPSHOT_INTERVAL, last_version + 1, SNAPSHOT_INTERVAL))
    assert latest.topic.endswith("waka.domain.app:App")


def test_state_from_snapshots_equals_full_replay(platform, long_app, plain_ledger):
    from_snapshot = platform.ledger.repository.get(long_app.id)
    from_replay = plain_ledger.repository.get(long_app.id)
    assert from_snapshot.version == from_replay.version == 2 + 2 * CHANGES
    assert vars(from_snapshot) == vars(from_replay)
    assert from_snapshot.config == expected_config_at(CHANGES + 1)
    assert from_snapshot.release_positions == list(range(2, 2 * CHANGES + 3, 2))

    # Every snapshot holds the state a replay to its version gives.
    for snapshot in snapshots_of(platform.ledger, long_app.id):
        restored = snapshot.mutate(None)
        replayed = plain_ledger.repository.get(long_app.id, version=snapshot.originator_version)
        assert vars(restored) == vars(replayed)


def test_rollback_after_snapshots_replays_from_an_earlier_snapshot(
    platform, actor, long_app, plain_ledger
):
    ledger = platform.ledger
    # A release between two snapshots, one before the first, and v1.
    for release in (261, 5, 1):
        expected = expected_config_at(release)
        assert ledger.config_at_release(long_app.id, release) == expected
        assert plain_ledger.config_at_release(long_app.id, release) == expected

    rolled = ledger.rollback(actor, long_app.id, 261)
    assert rolled.config == expected_config_at(261)
    assert rolled.config["N"] == "260"
    assert rolled.current_release == CHANGES + 2

    loaded = ledger.get_app(long_app.id)
    assert loaded.config == expected_config_at(261)
    [last] = ledger.events.get(long_app.id, desc=True, limit=1)
    assert isinstance(last, App.Released)
    assert (last.version, last.description) == (CHANGES + 2, "Rollback to v261")
    # The ledger without snapshots agrees.
    assert vars(plain_ledger.repository.get(long_app.id)) == vars(loaded)
