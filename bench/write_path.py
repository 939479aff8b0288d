"""Where a write's time goes, in-process (no HTTP), on SQLite and PostgreSQL.

`control_plane_writes.py` and `api_latency.py` measure a PATCH /apps/:app/config-vars from
outside; this takes the same work apart inside one process, on an app with a realistic config:

1. the steps of one config change as the PATCH handler makes them: the API key lookup, the
   app by name and its access (collaborators, team), the command (load the App, the domain
   call, save: ConfigChanged + Released, a snapshot every 100 versions), the projector's
   catch-up the API runs before answering, and reading the config back (wall time, and the
   CPU time of the writing thread: the part of it that is waka's Python, not PostgreSQL);
   plus one fdatasync on the disk that holds WAKA_HOME;
2. loading and the whole write with the ledger's aggregate cache off (AGGREGATE_CACHE_MAXSIZE=0);
3. 8 threads writing at once, all to one app or each to its own, counting how many saves each
   write took (a save that loses the optimistic-concurrency race is retried on fresh state).

    python bench/write_path.py            # full run, both backends (~30 s)
    python bench/write_path.py --quick    # a few seconds
    python bench/write_path.py --backend postgres --waka-root /tmp/before   # other code

PostgreSQL: $WAKA_BENCH_DATABASE_URL, default
postgresql://postgres:postgres@127.0.0.1:5432/postgres (a fresh schema, dropped afterwards).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _waka_root() -> Path:
    """`--waka-root PATH`: measure the waka code of another checkout (the one before a change,
    say); read before the imports below, which it decides."""
    if "--waka-root" in sys.argv[:-1]:
        return Path(sys.argv[sys.argv.index("--waka-root") + 1]).resolve()
    return ROOT


sys.path[:0] = [str(ROOT / "bench"), str(_waka_root())]

import report  # noqa: E402
from machine import CpuWatch, describe  # noqa: E402

import waka.ledger  # noqa: E402
from waka.bootstrap import Platform, bootstrap  # noqa: E402
from waka.config import Settings  # noqa: E402
from waka.domain.account import hash_api_key  # noqa: E402
from waka.ledger import Ledger  # noqa: E402
from waka.projections.accounts import account_by_key_hash  # noqa: E402
from waka.projections.apps import find_app  # noqa: E402
from waka.projections.collaborators import app_access  # noqa: E402
from waka.projections.config_vars import config_of  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
WRITERS = 8


class CountingLedger(Ledger):
    """The Ledger, counting calls to save (a retried command saves more than once)."""

    name = "waka"  # same tables and env prefix as the Ledger

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saves = 0
        self._count_lock = threading.Lock()

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        with self._count_lock:
            self.saves += 1
        return super().save(*objs, **kwargs)


@dataclass
class Row:
    backend: str
    what: str
    p50_ms: float | None
    p90_ms: float | None = None
    note: str = ""
    cpu_ms: float | None = None


def summarize(
    backend: str,
    samples: dict[str, list[float]],
    prefix: str = "",
    cpu: dict[str, list[float]] | None = None,
) -> list[Row]:
    rows = []
    for what, values in samples.items():
        ordered = sorted(values)
        rows.append(
            Row(
                backend,
                prefix + what,
                statistics.median(ordered) * 1000,
                ordered[int(len(ordered) * 0.9)] * 1000,
                cpu_ms=statistics.median(cpu[what]) * 1000 if cpu else None,
            )
        )
    return rows


def fdatasync_cost(directory: Path, times: int) -> list[float]:
    path = directory / "fsync-probe"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for _ in range(times):
            os.write(fd, b"x" * 4096)
            began = time.perf_counter()
            os.fdatasync(fd)
            samples.append(time.perf_counter() - began)
    finally:
        os.close(fd)
        path.unlink()
    return samples


PHASES = (
    "authenticate (API key)",
    "app by name + access",
    "command: load App",
    "command: domain call",
    "command: save (append)",
    "projector catch-up",
    "render: config vars",
    "write total",
)


def phases(
    platform: Platform, ledger: Ledger, app_id: uuid.UUID, actor: Any, key: str, n: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time the parts of `n` config changes made as PATCH /apps/:app/config-vars makes them
    (after a tenth as many to warm up): wall time, and this thread's CPU time (which other
    work on the machine does not inflate much, unlike the wall time)."""
    samples: dict[str, list[float]] = {name: [] for name in PHASES}
    cpu: dict[str, list[float]] = {name: [] for name in PHASES}
    key_hash = hash_api_key(key)
    store = platform.store
    warmup = max(5, n // 10)
    for i in range(warmup + n):
        marks = [(time.perf_counter(), time.thread_time())]

        def mark(marks: list[tuple[float, float]] = marks) -> None:
            marks.append((time.perf_counter(), time.thread_time()))

        account_by_key_hash(store, key_hash)
        mark()
        app_access(store, find_app(store, "bench-app-0"))
        mark()
        app = ledger.get_app(app_id)
        mark()
        app.set_config({"COUNTER": str(i)}, actor)
        mark()
        ledger.save(app)
        mark()
        platform.projector.catch_up()
        mark()
        config_of(store, str(app_id))
        mark()
        if i >= warmup:
            spans = [*itertools.pairwise(marks), (marks[0], marks[-1])]
            for name, (start, end) in zip(PHASES, spans, strict=True):
                samples[name].append(end[0] - start[0])
                cpu[name].append(end[1] - start[1])
    return samples, cpu


def contention(
    platform: Platform, ledger: CountingLedger, app_ids: list[uuid.UUID], actor: Any, each: int
) -> tuple[float, float, int]:
    """WRITERS threads each make `each` config changes (command + catch-up, as the API does)
    to the apps given (one shared app, or one each). Returns writes/s, saves per write, and
    how many writes failed (a conflict still lost after the ledger's retries)."""
    from eventsourcing.persistence import RecordConflictError

    saves_before = ledger.saves
    errors: list[BaseException] = []
    failed = 0

    def writer(w: int) -> None:
        nonlocal failed
        app_id = app_ids[w % len(app_ids)]
        try:
            for i in range(each):
                try:
                    ledger.set_config(actor, app_id, {"COUNTER": f"{w}-{i}"})
                except RecordConflictError:  # retries exhausted: counted, not fatal
                    failed += 1
                platform.projector.catch_up()
        except BaseException as error:  # report after the run
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    writes = WRITERS * each - failed
    return writes / elapsed, (ledger.saves - saves_before) / max(1, writes), failed


def bench_backend(backend: str, settings: Settings, n: int) -> list[Row]:
    platform = bootstrap(settings)
    env = platform.settings.eventsourcing_env()  # with the cipher key bootstrap resolved
    ledger = CountingLedger(env=env)
    # The ledger's own aggregate cache, off (only where the code measured has one of its own:
    # to eventsourcing's cache, which older waka left off, "0" means unbounded).
    uncached = (
        CountingLedger(env={**env, "AGGREGATE_CACHE_MAXSIZE": "0"})
        if hasattr(waka.ledger, "AGGREGATE_CACHE_SIZE")
        else None
    )
    rows: list[Row] = []
    try:
        account, key = ledger.register_user("bench@example.com")
        actor = account.as_actor()
        apps = [ledger.create_app(actor, f"bench-app-{w}") for w in range(WRITERS)]
        settings_vars = {f"SETTING_{k:02d}": "x" * 40 for k in range(15)}
        for app in apps:
            ledger.set_config(actor, app.id, settings_vars)
        platform.projector.catch_up()
        app_id = apps[0].id

        sync = fdatasync_cost(settings.home, max(20, n // 2))
        rows += summarize(backend, {"fdatasync of 4 KiB (disk of WAKA_HOME)": sync})
        samples, cpu = phases(platform, ledger, app_id, actor, key, n)
        rows += summarize(backend, samples, cpu=cpu)
        if uncached is not None:
            samples, cpu = phases(platform, uncached, app_id, actor, key, n)
            wanted = ("command: load App", "write total")
            rows += summarize(
                backend,
                {k: v for k, v in samples.items() if k in wanted},
                "aggregate cache off: ",
                cpu=cpu,
            )
        print(f"  {backend}: phases done", file=sys.stderr, flush=True)

        each = max(5, n // 8)
        for label, ids in (("one app", [app_id]), (f"{WRITERS} apps", [a.id for a in apps])):
            rate, saves, failed = contention(platform, ledger, ids, actor, each)
            lost = f", {failed} failed (retries exhausted)" if failed else ""
            rows.append(
                Row(
                    backend,
                    f"{WRITERS} threads writing, {label}",
                    None,
                    None,
                    f"{rate:.0f} writes/s, {saves:.2f} saves per write{lost}",
                )
            )
    finally:
        if uncached is not None:
            uncached.close()
        ledger.close()
        platform.close()
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("backend", "what", "p50 ms", "p90 ms", "CPU ms", "note")
    cells = [
        (
            r.backend,
            r.what,
            "" if r.p50_ms is None else f"{r.p50_ms:.2f}",
            "" if r.p90_ms is None else f"{r.p90_ms:.2f}",
            "" if r.cpu_ms is None else f"{r.cpu_ms:.2f}",
            r.note,
        )
        for r in rows
    ]
    report.print_table(header, cells, numeric={2, 3, 4})


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, to check it works")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--waka-root", type=Path, default=ROOT, help="the waka code measured")
    args = parser.parse_args()

    n = 40 if args.quick else 400
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
            rows += bench_backend(backend, settings, n)
        others.append(f"{watch.others_share():.0%} during the {backend} run")

    print()
    print(
        f"waka write path, in-process ({'quick' if args.quick else 'full'} run; {n} config "
        f"changes per phase table; {WRITERS} threads x {max(5, n // 8)} writes for contention; "
        "each write: command + projector catch-up, as the API makes it; code measured: "
        f"{_waka_root()})"
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
