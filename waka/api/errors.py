"""Errors in Heroku's shape: {"id": "not_found", "message": "..."} with the matching status."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from waka.domain.errors import Conflict, DomainError, Forbidden, NameTaken, NotFound

STATUS_OF: dict[type[DomainError], int] = {
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    NameTaken: 422,
}


class ApiError(Exception):
    def __init__(
        self, status: int, error_id: str, message: str, resource: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message
        self.resource = resource  # Heroku names the missing kind of thing: "add_on", "app"

    @classmethod
    def from_domain(cls, error: DomainError) -> ApiError:
        return cls(STATUS_OF.get(type(error), 422), error.error_id, error.message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def unauthorized(message: str = "Invalid credentials provided.") -> ApiError:
    return ApiError(401, "unauthorized", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


ENDPOINT_NOT_FOUND = (
    "The requested API endpoint was not found. Are you using the right HTTP verb (e.g. `GET` "
    "vs. `POST`), and did you specify your intended version with the `Accept` header?"
)


def error_response(status: int, error_id: str, message: str) -> Response:
    """An error for routes outside `endpoint()` (raw streams, uploads, routing failures)."""
    body = orjson.dumps({"id": error_id, "message": message})
    return Response(body, status, media_type="application/json")
