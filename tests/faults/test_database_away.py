"""The API's answer when the database goes away under a request: a 503 `unavailable` in
Heroku's error shape that says to try again, not a 500; any other crash stays a 500."""

from __future__ import annotations

import asyncio

import orjson
import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from psycopg_pool import PoolTimeout
from starlette.requests import Request

from waka.api.app import _crashed


def answer(error: Exception) -> tuple[int, dict, str | None]:
    request = Request(
        {"type": "http", "method": "PATCH", "path": "/apps/x/config-vars", "headers": []}
    )
    response = asyncio.run(_crashed(request, error))
    return response.status_code, orjson.loads(response.body), response.headers.get("retry-after")


def wrapped() -> Exception:
    """eventsourcing's error, raised from psycopg's, as the ledger raises it."""
    try:
        try:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        except psycopg.OperationalError as cause:
            raise OperationalError("server closed the connection unexpectedly") from cause
    except OperationalError as error:
        return error


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.OperationalError("consuming input failed"),
        PoolTimeout("couldn't get a connection after 30.00 sec"),
        wrapped(),
    ],
    ids=["admin-shutdown", "connection-lost", "pool-timeout", "eventsourcing"],
)
def test_a_database_gone_away_is_a_503_to_retry(error: Exception) -> None:
    status, body, retry_after = answer(error)
    assert (status, body["id"], retry_after) == (503, "unavailable", "1")
    assert "try again" in body["message"]


def test_any_other_crash_is_a_500_without_details() -> None:
    status, body, retry_after = answer(ValueError("secret detail"))
    assert (status, body["id"], retry_after) == (500, "internal_server_error", None)
    assert "secret" not in body["message"]
