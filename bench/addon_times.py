"""How long add-ons take, through the API's own code path (Starlette's test client in-process,
the add-on manager running as in `waka up`), on the real servers:

- `POST /apps/:app/addons` until it answers (it waits for the provider: 201 = provisioned,
  attached and released),
- `DELETE /apps/:app/addons/:addon` until the resource is gone from its server.

    python bench/addon_times.py [--quick] [--rounds N]

Needs PostgreSQL at $WAKA_BENCH_DATABASE_URL (a superuser; default
postgresql://postgres:postgres@127.0.0.1:5432/postgres) and redis-server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe
from starlette.testclient import TestClient

from waka.api.app import create_api
from waka.bootstrap import bootstrap
from waka.config import Settings

URL = os.environ.get("WAKA_BENCH_DATABASE_URL") or (
    "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds: does it still work?")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    print("\n".join(describe(URL)))

    with tempfile.TemporaryDirectory() as tmp:
        platform = bootstrap(Settings(home=Path(tmp) / "waka", addons_postgres_url=URL))
        _, key = platform.ledger.register_user("bench@example.com")
        platform.projector.catch_up()
        stop = threading.Event()
        manager = threading.Thread(
            target=platform.addon_manager.run_forever, args=(stop.is_set, 0.05), daemon=True
        )
        manager.start()
        client = TestClient(create_api(platform))
        client.headers.update({"Authorization": f"Bearer {key}"})
        client.post("/apps", json={"name": "bench"})
        print()
        print("| add-on | create → provisioned, p50 | max | destroy → gone, p50 | max |")
        print("|---|---|---|---|---|")
        try:
            for service in ("heroku-postgresql", "heroku-redis"):
                created, removed = [], []
                provider = platform.providers[service]
                for n in range(rounds):
                    print(f"{service} round {n + 1}/{rounds}", file=sys.stderr)
                    started = time.perf_counter()
                    response = client.post("/apps/bench/addons", json={"plan": service})
                    created.append(time.perf_counter() - started)
                    assert response.status_code == 201, response.text
                    addon = response.json()
                    started = time.perf_counter()
                    client.delete(f"/apps/bench/addons/{addon['id']}")
                    while provider.exists(addon["id"]):
                        time.sleep(0.005)
                    removed.append(time.perf_counter() - started)
                print(
                    f"| {service} | {ms(statistics.median(created))} | {ms(max(created))} "
                    f"| {ms(statistics.median(removed))} | {ms(max(removed))} |"
                )
        finally:
            stop.set()
            platform.wake_addon_manager()
            manager.join()
            platform.close()
    print(f"\n{rounds} rounds each; one add-on at a time.")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    main()
