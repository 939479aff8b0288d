"""Build output as Heroku shows it: step lines start with `----->`, everything else is indented."""

from __future__ import annotations

from collections.abc import Callable

STEP = "-----> "
WARNING = " !     "
INDENT = " " * 7


def is_warning(line: str) -> bool:
    """A ` !     ` line, or the bare ` !` that separates paragraphs of one warning block."""
    return line.startswith(WARNING) or line == WARNING.rstrip()


def heroku_line(line: str) -> str:
    if line.startswith(STEP) or is_warning(line) or not line.strip():
        return line
    return INDENT + line


class BuildLog:
    """Turns a byte stream (chunks split anywhere) into formatted lines, as they complete.

    Every line is also kept, so a failed build can carry its whole output in its error.
    """

    def __init__(self, output: Callable[[str], None]) -> None:
        self._output = output
        self._pending = b""
        self.lines: list[str] = []

    def write(self, chunk: bytes) -> None:
        self._pending += chunk
        *complete, self._pending = self._pending.split(b"\n")
        for raw in complete:
            self._emit(raw)

    def step(self, text: str) -> None:
        self.emit_line(STEP + text)

    def info(self, text: str) -> None:
        self.emit_line(INDENT + text)

    def emit_line(self, line: str) -> None:
        self.lines.append(line)
        self._output(line)

    def flush(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = b""

    def text(self) -> str:
        return "\n".join(self.lines)

    def _emit(self, raw: bytes) -> None:
        # A carriage return redraws a terminal line (progress bars): keep only the final state.
        text = raw.decode("utf-8", errors="replace").rstrip("\r").rsplit("\r", 1)[-1]
        self.emit_line(heroku_line(text.rstrip()))
