"""What the benchmark scripts share: a fresh store per backend, and their Markdown tables."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from waka.config import Settings


@contextlib.contextmanager
def settings_for(backend: str, database_url: str) -> Iterator[Settings]:
    """Settings on a temporary home; on postgres also a schema of its own, dropped after."""
    with tempfile.TemporaryDirectory(prefix="waka-bench-") as home:
        if backend == "sqlite":
            yield Settings(home=Path(home))
            return
        import psycopg
        from psycopg import sql

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield Settings(home=Path(home), database_url=database_url, database_schema=schema)
        finally:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


def print_table(header: Sequence[str], cells: Sequence[Sequence[str]], numeric: set[int]) -> None:
    """A Markdown table, columns padded; the `numeric` ones right-aligned."""
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if i in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)]
    print(line(header))
    print("|" + "|".join(rule) + "|")
    for c in cells:
        print(line(c))
