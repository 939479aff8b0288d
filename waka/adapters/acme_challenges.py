"""HTTP-01 answers that every router process serves, whichever process ordered the certificate.

The ACM reactor leads in one process; the ACME server's validation request may reach any router
copy. Answers are rows in the read store (`waka_acme_challenges`), announced on the ledger's
channel as the topic `waka:acme-challenges`; each router keeps them in memory (the router asks
on its event loop and must not wait for a database) and reloads them when told, and every 2 s.
"""

from __future__ import annotations

from typing import Any

from waka.adapters.acme import Challenges
from waka.adapters.ledger_notifications import announce, channel_name

TOPIC = "waka:acme-challenges"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS waka_acme_challenges (token TEXT PRIMARY KEY, answer TEXT NOT NULL)"
)


class SharedChallenges(Challenges):
    """The ACME client's Challenges, and a reactor (waka.reactors.lifecycle) of every router."""

    name = "acme-challenges"
    interval = 2.0
    topics = frozenset({TOPIC})

    def __init__(self, store: Any, database_url: str | None, schema: str) -> None:
        super().__init__()
        self.store = store
        self.channel = channel_name(schema) if database_url else None
        with store.transaction() as cur:
            cur.execute(SCHEMA)

    def put(self, token: str, answer: str) -> None:
        with self.store.transaction() as cur:
            cur.execute(
                "INSERT INTO waka_acme_challenges (token, answer) VALUES (?, ?)"
                " ON CONFLICT (token) DO UPDATE SET answer = excluded.answer",
                (token, answer),
            )
            announce(cur, self.channel, TOPIC)
        super().put(token, answer)

    def drop(self, token: str) -> None:
        with self.store.transaction() as cur:
            cur.execute("DELETE FROM waka_acme_challenges WHERE token = ?", (token,))
            announce(cur, self.channel, TOPIC)
        super().drop(token)

    def tick(self) -> None:
        rows = self.store.query("SELECT token, answer FROM waka_acme_challenges")
        self._answers = {r["token"].encode(): r["answer"].encode() for r in rows}
