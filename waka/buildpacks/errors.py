"""The one error a build reports to whoever started it."""

from __future__ import annotations


class BuildError(Exception):
    """A build that failed; the message is shown to the pusher, `output` is the build log so far."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output
