"""Domain errors. Each carries a Heroku error id so the API can render it unchanged."""


class DomainError(Exception):
    """A command broke a rule of the platform. The message is shown to the user as is."""

    error_id = "invalid_params"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParams(DomainError):
    error_id = "invalid_params"


class NotFound(DomainError):
    error_id = "not_found"


class Conflict(DomainError):
    error_id = "conflict"


class NameTaken(DomainError):
    error_id = "invalid_params"


class Forbidden(DomainError):
    error_id = "forbidden"
