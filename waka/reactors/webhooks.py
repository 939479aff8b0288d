"""The webhook reactor: an app's events, POSTed to its webhooks' receivers, signed.

Two halves, both over tables of their own in the read store (not read models: a rebuild of
the projections must not deliver anything twice, so they are never dropped):

- capture: follows the ledger's notification log from its own position
  (`waka_webhook_position`). In one transaction per batch it keeps its own copy of who
  subscribes to what (`waka_webhook_subscriptions`, from the AppWebhook events it reads in
  order, so an event is offered exactly to the webhooks that existed when it happened), turns
  each matching event into a webhook event (Heroku's payload) and one pending delivery per
  webhook, and moves its position. A crash loses or repeats nothing.
- delivery: per webhook, strictly in order, the oldest open delivery is attempted when due;
  the next waits behind it. 2xx is success; anything else is retried with exponential
  back-off, `notify` a few times, `sync` for longer, then the delivery is failed and the next
  one goes. Every attempt is a row (`waka_webhook_attempts`) and updates the delivery. A
  receiver that was down gets every event afterwards, in order; as far as waka can tell none
  twice (an attempt whose answer is lost in a crash of waka is sent again).

`dyno` events are not in the ledger (they are the dyno manager's observed state): the dyno
manager reports them in-process through `dyno_changed()`, which records them like the others.

Bodies are signed with the webhook's secret: `Heroku-Webhook-Hmac-SHA256` is the base64 HMAC-
SHA256 of the exact body. Secrets, Authorization headers and receiver URLs (which may carry
credentials) are never logged: logs show `redact_url` of the URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from eventsourcing.application import Application

from waka.domain.addon import Addon
from waka.domain.app import App, formation_id, release_id
from waka.domain.webhook import AppWebhook
from waka.notification_log import read_batch
from waka.projections.base import iso
from waka.projections.store import Cursor, ReadStore, Row
from waka.projections.webhooks import find_webhook
from waka.redaction import redact_url

log = logging.getLogger("waka.webhooks")

BATCH = 500
VERSION = "application/vnd.heroku+json; version=3"
USER_AGENT = "Heroku-Webhooks/waka"
OPEN = ("pending", "retrying")  # statuses of deliveries still to be attempted

TABLES = (
    """CREATE TABLE IF NOT EXISTS waka_webhook_position (
        name TEXT PRIMARY KEY, position BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS waka_webhook_subscriptions (
        webhook_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, include TEXT NOT NULL,
        level TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS waka_webhook_events (
        id TEXT PRIMARY KEY, app_id TEXT NOT NULL, include TEXT NOT NULL, payload TEXT NOT NULL,
        created_at TEXT NOT NULL, seq BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS waka_webhook_deliveries (
        id TEXT PRIMARY KEY, seq BIGINT NOT NULL, webhook_id TEXT NOT NULL,
        event_id TEXT NOT NULL, app_id TEXT NOT NULL, include TEXT NOT NULL, level TEXT NOT NULL,
        status TEXT NOT NULL, num_attempts INTEGER NOT NULL, next_attempt_at DOUBLE PRECISION,
        last_attempt TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS waka_webhook_attempts (
        id TEXT PRIMARY KEY, delivery_id TEXT NOT NULL, code INTEGER, error_class TEXT,
        status TEXT NOT NULL, created_at TEXT NOT NULL)""",
    # Each pass looks for every webhook's oldest open delivery; the API lists an app's.
    """CREATE INDEX IF NOT EXISTS waka_webhook_deliveries_open
        ON waka_webhook_deliveries (webhook_id, status, seq)""",
    """CREATE INDEX IF NOT EXISTS waka_webhook_deliveries_app
        ON waka_webhook_deliveries (app_id, seq)""",
    "CREATE INDEX IF NOT EXISTS waka_webhook_events_app ON waka_webhook_events (app_id, seq)",
)


def setup(store: ReadStore) -> None:
    with store.transaction() as cur:
        for ddl in TABLES:
            cur.execute(ddl)
        cur.execute(
            "INSERT INTO waka_webhook_position (name, position) VALUES ('webhooks', 0)"
            " ON CONFLICT (name) DO NOTHING"
        )


@dataclass(frozen=True)
class WebhookOptions:
    notify_attempts: int = 3  # Heroku's notify makes one; a blip should not lose an event
    sync_attempts: int = 12  # back-off 1, 2, 4 ... 300 s: about 25 minutes in all
    backoff_min: float = 1.0
    backoff_max: float = 300.0
    timeout: float = 10.0
    interval: float = 0.5  # how often to look for new events and due deliveries
    ssl_context: ssl.SSLContext | None = None  # None: the system's trusted CAs

    def attempts(self, level: str) -> int:
        return self.sync_attempts if level == "sync" else self.notify_attempts

    def backoff(self, attempts: int) -> float:
        return min(self.backoff_min * 2 ** max(attempts - 1, 0), self.backoff_max)


class Unreachable(Exception):
    """No HTTP answer: the connection was refused, reset or timed out."""


Post = Callable[[str, bytes, dict[str, str], WebhookOptions], int]


def http_post(url: str, body: bytes, headers: dict[str, str], options: WebhookOptions) -> int:
    """POST `body`; the status code, or Unreachable naming only the error's class."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = options.ssl_context or ssl.create_default_context()
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=options.timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=options.timeout)
    headers = dict(headers)
    if parts.username is not None and "Authorization" not in headers:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
        return response.status
    except (OSError, http.client.HTTPException) as error:  # never the message: it may quote
        raise Unreachable(type(error).__name__) from None  # the URL's path
    finally:
        conn.close()


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# --- what an event looks like to a receiver ---------------------------------------------


@dataclass(frozen=True)
class Published:
    app_id: str
    include: str
    resource: str
    action: str
    data: dict[str, Any]
    actor: dict[str, str]
    at: str


def _app(ledger: Application, app_id: Any, version: int) -> dict[str, str]:
    try:
        app = ledger.repository.get(app_id, version=version)
        return {"id": str(app_id), "name": app.name}
    except Exception:  # the event still says which app
        return {"id": str(app_id), "name": ""}


def published(
    event: Any, ledger: Application, subscribed: Callable[[str], bool]
) -> list[Published]:
    """The webhook events one ledger event makes, for the apps that have a webhook at all."""
    actor = {"id": event.actor.get("id", ""), "email": event.actor.get("email", "")}
    at = iso(event.timestamp)
    if isinstance(event, App.Event):
        app_id = str(event.originator_id)
        if not subscribed(app_id):
            return []
        app = _app(ledger, event.originator_id, event.originator_version)
        return [Published(app_id, *p, actor, at) for p in _app_event(event, app, actor, at)]
    if isinstance(event, Addon.Created | Addon.Provisioned | Addon.Deprovisioned):
        try:
            addon = ledger.repository.get(event.originator_id, version=event.originator_version)
        except Exception:
            return []
        if not subscribed(str(addon.app_id)):
            return []
        action = {Addon.Created: "create", Addon.Provisioned: "update"}.get(type(event), "destroy")
        data = {
            "id": str(event.originator_id),
            "name": addon.name,
            "app": {"id": str(addon.app_id), "name": addon.app_name},
            "addon_service": {"name": addon.service},
            "plan": {"name": f"{addon.service}:{addon.plan}"},
            "state": addon.state,
            "created_at": at,
            "updated_at": at,
        }
        return [Published(str(addon.app_id), "api:addon", "addon", action, data, actor, at)]
    return []


def _app_event(
    event: Any, app: dict[str, str], actor: dict[str, str], at: str
) -> list[tuple[str, str, str, dict[str, Any]]]:
    app_id = event.originator_id
    match event:
        case App.Released() | App.ReleaseFailed():
            failed = isinstance(event, App.ReleaseFailed)
            data = {
                "id": str(release_id(app_id, event.version)),
                "version": event.version,
                "description": event.description,
                "status": "failed" if failed else "succeeded",
                "slug": {"id": event.slug_id} if event.slug_id else None,
                "app": app,
                "user": actor,
                "created_at": at,
                "updated_at": at,
            }
            return [("api:release", "release", "update" if failed else "create", data)]
        case App.BuildRequested() | App.BuildSucceeded() | App.BuildFailed():
            status = {App.BuildRequested: "pending", App.BuildSucceeded: "succeeded"}.get(
                type(event), "failed"
            )
            data = {"id": event.build_id, "status": status, "app": app, "user": actor}
            if isinstance(event, App.BuildRequested):
                data["source_blob"] = {"version": event.source_version}
            data |= {"created_at": at, "updated_at": at}
            action = "create" if isinstance(event, App.BuildRequested) else "update"
            return [("api:build", "build", action, data)]
        case App.FormationChanged():
            return [
                (
                    "api:formation",
                    "formation",
                    "update",
                    {
                        "id": str(formation_id(app_id, update["type"])),
                        "type": update["type"],
                        **{k: update[k] for k in ("quantity", "size") if k in update},
                        "app": app,
                        "updated_at": at,
                    },
                )
                for update in event.updates
            ]
        case App.DomainAdded() | App.DomainRemoved():
            action = "create" if isinstance(event, App.DomainAdded) else "destroy"
            data = {"hostname": event.hostname, "kind": "custom", "app": app, "updated_at": at}
            return [("api:domain", "domain", action, data)]
    return []


# --- the reactor ------------------------------------------------------------------------


def _now_iso(clock: Callable[[], float]) -> str:
    return iso(datetime.fromtimestamp(clock(), UTC))


def iso_at(moment: float | None) -> str | None:
    return None if moment is None else iso(datetime.fromtimestamp(moment, UTC))


class WebhookReactor:
    """A reactor (waka.reactors.lifecycle), one process at a time (leased): its position and
    deliveries are in the store, so the worker that takes over goes on where it stopped."""

    name = "webhooks"
    topics = None  # every event may concern a webhook

    def __init__(
        self,
        ledger: Application,
        store: ReadStore,
        options: WebhookOptions | None = None,
        post: Post = http_post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.options = options or WebhookOptions()
        self.post = post
        self.clock = clock
        self.wakeup = threading.Event()
        self.interval = self.options.interval
        self._lock = threading.Lock()  # one capture at a time in this process
        self._stopping = threading.Event()
        setup(store)

    # capture ------------------------------------------------------------------------------

    def capture(self) -> int:
        """Turn every ledger event since the last capture into webhook events and deliveries;
        return how many ledger events were read."""
        read = 0
        with self._lock:
            while True:
                with self.store.transaction() as cur:
                    rows = cur.query(
                        "SELECT position FROM waka_webhook_position WHERE name = 'webhooks'"
                    )
                    start = rows[0]["position"] if rows else 0
                    batch = read_batch(self.ledger, start, limit=BATCH)
                    for notice in batch:
                        self._capture(cur, notice.event)
                    if batch:
                        cur.execute(
                            "UPDATE waka_webhook_position SET position = ? WHERE name = 'webhooks'",
                            (batch[-1].id,),
                        )
                read += len(batch)
                if len(batch) < BATCH:
                    return read

    def _capture(self, cur: Cursor, event: Any) -> None:
        match event:
            case AppWebhook.Created():
                cur.execute(
                    "INSERT INTO waka_webhook_subscriptions (webhook_id, app_id, include, level)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (webhook_id) DO NOTHING",
                    (
                        str(event.originator_id),
                        str(event.app_id),
                        json.dumps(event.include),
                        event.level,
                    ),
                )
                return
            case AppWebhook.Updated():
                for key in ("include", "level"):
                    if key in event.changes:
                        value = event.changes[key]
                        cur.execute(
                            f"UPDATE waka_webhook_subscriptions SET {key} = ? WHERE webhook_id = ?",
                            (
                                json.dumps(value) if key == "include" else value,
                                str(event.originator_id),
                            ),
                        )
                return
            case AppWebhook.Removed():
                self._unsubscribe(cur, "webhook_id", str(event.originator_id))
                return
            case App.Destroyed():
                self._unsubscribe(cur, "app_id", str(event.originator_id))
                return
        subscriptions: dict[str, list[Row]] = {}

        def subscribed(app_id: str) -> bool:
            if app_id not in subscriptions:
                subscriptions[app_id] = cur.query(
                    "SELECT * FROM waka_webhook_subscriptions WHERE app_id = ?", (app_id,)
                )
            return bool(subscriptions[app_id])

        for item in published(event, self.ledger, subscribed):
            self._record(cur, item, subscriptions[item.app_id])

    def _unsubscribe(self, cur: Cursor, column: str, value: str) -> None:
        """A removed webhook gets nothing more: its open deliveries end as failed."""
        ids = [
            r["webhook_id"]
            for r in cur.query(
                f"SELECT webhook_id FROM waka_webhook_subscriptions WHERE {column} = ?", (value,)
            )
        ]
        for webhook_id in ids:
            cur.execute(
                "UPDATE waka_webhook_deliveries SET status = 'failed', next_attempt_at = NULL,"
                " updated_at = ? WHERE webhook_id = ? AND status IN ('pending', 'retrying')",
                (_now_iso(self.clock), webhook_id),
            )
        cur.execute(f"DELETE FROM waka_webhook_subscriptions WHERE {column} = ?", (value,))

    def _record(self, cur: Cursor, item: Published, subscriptions: list[Row]) -> None:
        wanted = [s for s in subscriptions if item.include in json.loads(s["include"])]
        if not wanted:
            return
        event_id = str(uuid.uuid4())
        payload = {
            "action": item.action,
            "actor": item.actor,
            "data": item.data,
            "previous_data": {},
            "resource": item.resource,
            "version": VERSION,
        }
        cur.execute(
            "INSERT INTO waka_webhook_events (id, app_id, include, payload, created_at, seq)"
            " VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM waka_webhook_events))",
            (event_id, item.app_id, item.include, json.dumps(payload), item.at),
        )
        now = _now_iso(self.clock)
        for subscription in wanted:
            cur.execute(
                "INSERT INTO waka_webhook_deliveries (id, seq, webhook_id, event_id, app_id,"
                " include, level, status, num_attempts, next_attempt_at, last_attempt,"
                " created_at, updated_at) VALUES (?,"
                " (SELECT COALESCE(MAX(seq), 0) + 1 FROM waka_webhook_deliveries),"
                " ?, ?, ?, ?, ?, 'pending', 0, NULL, NULL, ?, ?)",
                (
                    str(uuid.uuid4()),
                    subscription["webhook_id"],
                    event_id,
                    item.app_id,
                    item.include,
                    subscription["level"],
                    now,
                    now,
                ),
            )
        self.wakeup.set()

    def dyno_changed(self, app_id: str, action: str, dyno: dict[str, Any]) -> None:
        """From the dyno manager: a dyno of the app was started, changed state or stopped."""
        at = _now_iso(self.clock)
        actor = {"id": "", "email": "waka"}
        data = {**dyno, "app": {"id": app_id}, "updated_at": at}
        item = Published(app_id, "dyno", "dyno", action, data, actor, at)
        with self.store.transaction() as cur:
            subscriptions = cur.query(
                "SELECT * FROM waka_webhook_subscriptions WHERE app_id = ?", (app_id,)
            )
            self._record(cur, item, subscriptions)

    # delivery -----------------------------------------------------------------------------

    def deliver_due(self) -> int:
        """Attempt each webhook's oldest open delivery that is due, until none is; return
        how many attempts were made."""
        attempts = 0
        while True:
            now = self.clock()
            heads = self.store.query(
                "SELECT d.* FROM waka_webhook_deliveries d WHERE d.status IN ('pending',"
                " 'retrying') AND d.seq = (SELECT MIN(x.seq) FROM waka_webhook_deliveries x"
                " WHERE x.webhook_id = d.webhook_id AND x.status IN ('pending', 'retrying'))"
                " ORDER BY d.seq"
            )
            due = [h for h in heads if h["next_attempt_at"] is None or h["next_attempt_at"] <= now]
            made = 0
            for delivery in due:
                if self._stopping.is_set():  # closed: the next leader delivers the rest
                    return attempts
                webhook = find_webhook(self.store, delivery["webhook_id"])
                if webhook is None:  # not in the read model yet (or just removed): later
                    continue
                self._attempt(delivery, webhook)
                made += 1
            attempts += made
            if not made:
                return attempts

    def _attempt(self, delivery: Row, webhook: dict[str, Any]) -> None:
        rows = self.store.query(
            "SELECT payload, created_at FROM waka_webhook_events WHERE id = ?",
            (delivery["event_id"],),
        )
        payload = json.loads(rows[0]["payload"])
        attempt_id = str(uuid.uuid4())
        started = _now_iso(self.clock)
        body = json.dumps(
            {
                "id": delivery["event_id"],
                "created_at": rows[0]["created_at"],
                "updated_at": rows[0]["created_at"],
                "published_at": started,
                "sequence": None,
                **payload,
                "webhook_metadata": {
                    "attempt": {"id": attempt_id},
                    "delivery": {"id": delivery["id"]},
                    "event": {"id": delivery["event_id"], "include": delivery["include"]},
                    "webhook": {"id": delivery["webhook_id"]},
                },
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Heroku-Webhook-Hmac-SHA256": sign(webhook["secret"], body),
            "Heroku-Webhook-Id": delivery["id"],
        }
        if webhook["authorization"]:
            headers["Authorization"] = webhook["authorization"]
        code: int | None = None
        error_class: str | None = None
        try:
            code = self.post(webhook["url"], body, headers, self.options)
        except Unreachable as error:
            error_class = str(error)
        except Exception as error:  # a bad URL, a TLS context error: still one failed attempt
            error_class = type(error).__name__
        ok = code is not None and 200 <= code < 300
        if code is not None and not ok:
            error_class = f"HTTP {code}"
        self._record_attempt(delivery, attempt_id, started, code, error_class, ok)
        if not ok:
            log.info(
                "webhook %s delivery %s to %s failed (%s)",
                delivery["webhook_id"],
                delivery["id"],
                redact_url(webhook["url"]),
                error_class,
            )

    def _record_attempt(
        self,
        delivery: Row,
        attempt_id: str,
        started: str,
        code: int | None,
        error_class: str | None,
        ok: bool,
    ) -> None:
        attempts = delivery["num_attempts"] + 1
        ended = _now_iso(self.clock)
        if ok:
            status, next_at = "succeeded", None
        elif attempts >= self.options.attempts(delivery["level"]):
            status, next_at = "failed", None
        else:
            status, next_at = "retrying", self.clock() + self.options.backoff(attempts)
        last = {
            "id": attempt_id,
            "code": code,
            "error_class": error_class,
            "status": "succeeded" if ok else "failed",
            "created_at": started,
            "updated_at": ended,
        }
        with self.store.transaction() as cur:
            cur.execute(
                "INSERT INTO waka_webhook_attempts (id, delivery_id, code, error_class, status,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (attempt_id, delivery["id"], code, error_class, last["status"], started),
            )
            # Only an open delivery moves on: a removal may have failed it meanwhile.
            cur.execute(
                "UPDATE waka_webhook_deliveries SET status = ?, num_attempts = ?,"
                " next_attempt_at = ?, last_attempt = ?, updated_at = ?"
                " WHERE id = ? AND status IN ('pending', 'retrying')",
                (status, attempts, next_at, json.dumps(last), ended, delivery["id"]),
            )

    # lifecycle ----------------------------------------------------------------------------

    def poll(self) -> None:
        self.capture()
        self.deliver_due()

    def tick(self) -> None:
        self.poll()

    def close(self) -> None:
        """Stop between deliveries (a delivery under way ends by its timeout)."""
        self._stopping.set()


# --- read side, for the API ------------------------------------------------------------


def delivery_rows(store: ReadStore, app_id: str, status: str | None = None) -> list[Row]:
    if status:
        return store.query(
            "SELECT * FROM waka_webhook_deliveries WHERE app_id = ? AND status = ? ORDER BY seq",
            (app_id, status),
        )
    return store.query(
        "SELECT * FROM waka_webhook_deliveries WHERE app_id = ? ORDER BY seq", (app_id,)
    )


def find_delivery(store: ReadStore, app_id: str, delivery_id: str) -> Row | None:
    rows = store.query(
        "SELECT * FROM waka_webhook_deliveries WHERE app_id = ? AND id = ?", (app_id, delivery_id)
    )
    return rows[0] if rows else None


def event_rows(store: ReadStore, app_id: str) -> list[Row]:
    return store.query("SELECT * FROM waka_webhook_events WHERE app_id = ? ORDER BY seq", (app_id,))


def find_event(store: ReadStore, app_id: str, event_id: str) -> Row | None:
    rows = store.query(
        "SELECT * FROM waka_webhook_events WHERE app_id = ? AND id = ?", (app_id, event_id)
    )
    return rows[0] if rows else None
