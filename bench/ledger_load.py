"""Loading a long app ledger (10,000 events) with and without snapshots, on SQLite and PostgreSQL.

For each backend this bootstraps a platform on a temporary WAKA_HOME (PostgreSQL: a fresh
schema, dropped afterwards), creates one app and gives it a history of config changes (each
one ConfigChanged + Released, so two events) until its stream holds --events events. The
history is appended by calling the App's domain method and saving every 100 events, so the
Ledger takes its snapshot every 100 versions exactly as the command path does.

Then it times, as the median of several runs:

- the latest state with snapshots (the Ledger as configured: snapshot + events after it),
  once with the head on a snapshot and once 99 events past the last snapshot;
- the latest state without snapshots (the same store read by a Ledger with snapshotting
  off: a full replay), split into reading the rows, decoding them, and replaying;
- a rollback's read: the app as it stood at an early release and at a middle one
  (`repository.get(app_id, version=...)`), with and without snapshots;
- the commands on the long app: `set_config` (load, append two events, maybe a snapshot)
  and `rollback` to v2 (two loads and an append).

    python bench/ledger_load.py            # full run, both backends (~1 minute)
    python bench/ledger_load.py --quick    # a few seconds: checks the script still works
    python bench/ledger_load.py --backend postgres --events 20000

PostgreSQL: $WAKA_BENCH_DATABASE_URL, default
postgresql://postgres:postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

import report  # noqa: E402
from machine import CpuWatch, describe  # noqa: E402

from waka.bootstrap import Platform, bootstrap  # noqa: E402
from waka.config import Settings  # noqa: E402
from waka.domain.actors import Actor  # noqa: E402
from waka.ledger import SNAPSHOT_INTERVAL, Ledger  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
ACTOR: Actor = {"id": str(uuid.UUID(int=1)), "email": "bench@example.com"}


class PlainLedger(Ledger):
    """The same ledger on the same store (same name: same tables), without snapshots."""

    name = "waka"
    is_snapshotting_enabled = False
    snapshotting_intervals: ClassVar = {}


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of `repeat` calls, in ms, and the last call's result."""
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000, result


@dataclass
class Row:
    backend: str
    what: str
    snapshots: str  # "yes", "no" or "-"
    events: int | None  # events read and applied (after the snapshot, if one was used)
    ms: float
    note: str = ""

    @property
    def us_per_event(self) -> str:
        # Only where the events, not the fixed cost of a query, make most of the time.
        if not self.events or self.events < SNAPSHOT_INTERVAL:
            return ""
        return f"{self.ms * 1000 / self.events:.1f}"


def config_change(i: int) -> dict[str, str | None]:
    """The i-th change: a deploy counter and one of twenty settings rotating through values."""
    return {"DEPLOY_COUNTER": str(i), f"SETTING_{i % 20:02d}": f"value-{i}-" + "x" * 24}


def build_history(platform: Platform, events: int) -> tuple[uuid.UUID, float]:
    """Create an app and append config changes until its stream holds `events` events.
    Returns the app id and the time taken, in seconds."""
    ledger = platform.ledger
    began = time.perf_counter()
    app = ledger.create_app(ACTOR, "long-app")  # Created + Released v1: version 2
    app = ledger.get_app(app.id)
    changes = (events - app.version) // 2
    for i in range(1, changes + 1):
        app.set_config(config_change(i), ACTOR)
        if app.version % SNAPSHOT_INTERVAL == 0 or i == changes:
            ledger.save(app)
    return app.id, time.perf_counter() - began


def bench_backend(backend: str, settings: Settings, events: int, repeat: int) -> list[Row]:
    platform = bootstrap(settings)
    plain = PlainLedger(env={**settings.eventsourcing_env(), "IS_SNAPSHOTTING_ENABLED": "n"})
    assert plain.snapshots is None
    rows: list[Row] = []
    try:
        ledger = platform.ledger
        assert ledger.snapshots is not None
        app_id, took = build_history(platform, events)
        head = ledger.get_app(app_id)
        snapshots = list(ledger.snapshots.get(app_id))
        rows.append(
            Row(
                backend,
                "append history (domain calls, save per 100)",
                "yes",
                head.version,
                took * 1000,
                f"{len(snapshots)} snapshots taken",
            )
        )
        print(
            f"  {backend}: {head.version} events, {len(snapshots)} snapshots, built in {took:.1f}s",
            file=sys.stderr,
            flush=True,
        )

        def load(app_ledger: Ledger, version: int | None = None) -> Callable[[], Any]:
            return lambda: app_ledger.repository.get(app_id, version=version)

        def after_snapshot(version: int) -> int:
            return version - version // SNAPSHOT_INTERVAL * SNAPSHOT_INTERVAL

        # Latest state. The snapshot holds the whole state, release_positions included.
        assert ledger.snapshots is not None
        [stored] = ledger.snapshots.recorder.select_events(app_id, desc=True, limit=1)
        snapshot_kib = len(stored.state) / 1024
        ms, app = timed(load(ledger), repeat * 4)
        assert app.version == head.version
        rows.append(
            Row(
                backend,
                f"latest (v{head.version})",
                "yes",
                after_snapshot(head.version),
                ms,
                f"snapshot at the head ({snapshot_kib:.1f} KiB stored)",
            )
        )
        # The last version that is SNAPSHOT_INTERVAL - 1 events past a snapshot.
        worst = max(
            v for v in range(1, head.version + 1) if after_snapshot(v) == SNAPSHOT_INTERVAL - 1
        )
        ms, app = timed(load(ledger, worst), repeat * 4)
        rows.append(
            Row(
                backend,
                f"state at v{worst}",
                "yes",
                after_snapshot(worst),
                ms,
                f"worst case: {SNAPSHOT_INTERVAL - 1} events after the snapshot",
            )
        )

        ms_rows, stored = timed(lambda: list(plain.recorder.select_events(app_id)), repeat)
        # Decoded one by one and dropped, as a replay does (a list of 10,000 events would make
        # the garbage collector's passes, not the decoding, the cost).
        ms_decoded, decoded = timed(lambda: sum(1 for _ in plain.events.get(app_id)), repeat)
        ms_full, app = timed(load(plain), repeat)
        assert app.version == head.version and app.config == head.config
        rows.append(
            Row(backend, f"latest (v{head.version})", "no", decoded, ms_full, "full replay")
        )
        rows.append(Row(backend, "  of which: read the rows", "no", len(stored), ms_rows))
        rows.append(
            Row(
                backend,
                "  of which: rows + decode to events",
                "no",
                decoded,
                ms_decoded,
                "zlib + JSON + event objects",
            )
        )

        # A rollback reads the app as it stood at an old release.
        for release in (2, head.latest_release // 2):
            version = head.aggregate_version_of(release)
            for name, app_ledger in (("yes", ledger), ("no", plain)):
                ms, app = timed(load(app_ledger, version), repeat)
                assert app.current_release == release
                applied = after_snapshot(version) if name == "yes" else version
                rows.append(
                    Row(
                        backend,
                        f"rollback read: release v{release} (version {version})",
                        name,
                        applied,
                        ms,
                    )
                )

        # The commands, on the long app, through the Ledger as configured.
        ms, _ = timed(
            lambda: ledger.set_config(ACTOR, app_id, {"BENCH": uuid.uuid4().hex}), repeat * 4
        )
        rows.append(Row(backend, "command: set_config (load + append 2 events)", "yes", None, ms))
        ms, _ = timed(lambda: ledger.rollback(ACTOR, app_id, 2), repeat)
        rows.append(Row(backend, "command: rollback to v2 (2 loads + append)", "yes", None, ms))
    finally:
        plain.close()
        platform.close()
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("backend", "what", "snapshots", "events applied", "ms (median)", "µs/event", "note")
    cells = [
        (
            r.backend,
            r.what,
            r.snapshots,
            "" if r.events is None else f"{r.events:,}",
            f"{r.ms:.2f}",
            r.us_per_event,
            r.note,
        )
        for r in rows
    ]
    report.print_table(header, cells, numeric={3, 4, 5})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, to check it works")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=None, help="events in the app (10,000)")
    args = parser.parse_args()

    events = args.events or (1_000 if args.quick else 10_000)
    repeat = 2 if args.quick else 9
    database_url = os.environ.get("WAKA_BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    machine = describe(database_url if "postgres" in backends else None)
    for line in machine:
        print(f"  {line}", file=sys.stderr, flush=True)
    rows: list[Row] = []
    others: list[str] = []
    for backend in backends:
        watch = CpuWatch()
        watch.start()
        with report.settings_for(backend, database_url) as settings:
            rows += bench_backend(backend, settings, events, repeat)
        others.append(f"{watch.others_share():.0%} during the {backend} run")

    print()
    print(
        f"waka ledger load ({'quick' if args.quick else 'full'} run; {events:,} events; "
        f"snapshot every {SNAPSHOT_INTERVAL}; median of {repeat} to {repeat * 4} runs; "
        f"Python {platform.python_version()}{', -O' if not __debug__ else ''})"
    )
    print("\n".join(machine))
    print(
        "CPU used by other processes (not this one, its children or PostgreSQL; over 5% "
        f"means noisy figures): {', '.join(others)}"
    )
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
