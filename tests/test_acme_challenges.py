"""ACM's HTTP-01 answers reach every router process: one process (leading ACM) puts an answer,
another router's copy serves it once the ledger's channel announces it (real PostgreSQL)."""

from __future__ import annotations

from tests.waiting import wait_for
from waka.adapters.acme import CHALLENGE_PREFIX
from waka.adapters.acme_challenges import SharedChallenges
from waka.config import Settings
from waka.reactors.lifecycle import Reactors


def test_an_answer_put_by_one_process_is_served_by_another(
    make_platform, postgres_url: str, postgres_schema: str, tmp_path
) -> None:
    def platform(home: str):  # type: ignore[no-untyped-def]
        return make_platform(
            Settings(
                home=tmp_path / home, database_url=postgres_url, database_schema=postgres_schema
            )
        )

    ordering, routing = platform("acm-leader"), platform("router")
    orders = SharedChallenges(ordering.store, postgres_url, postgres_schema)
    served = SharedChallenges(routing.store, postgres_url, postgres_schema)
    served.interval = 3600  # no timer: the announcement wakes it
    reactors = Reactors(routing.leases, routing.projector.catch_up)
    reactors.add(served)
    routing.notifications.subscribe(reactors.saved)
    routing.notifications.start()
    reactors.start()
    target = CHALLENGE_PREFIX + b"tok-123"
    try:
        wait_for(lambda: reactors.leading("acme-challenges"))
        assert served.answer(target) is None
        orders.put("tok-123", "tok-123.thumbprint")
        wait_for(lambda: served.answer(target) == b"tok-123.thumbprint", timeout=5)
        orders.drop("tok-123")
        wait_for(lambda: served.answer(target) is None, timeout=5)
    finally:
        reactors.stop()
        routing.notifications.stop()
