"""The Procfile parser: process types in order, and clear errors naming the bad line."""

from __future__ import annotations

import pytest

from waka.buildpacks import ProcfileError, parse_procfile


def test_process_types_in_file_order() -> None:
    text = "web: gunicorn app:app --bind 0.0.0.0:$PORT\nworker: python worker.py\n"
    assert parse_procfile(text) == {
        "web": "gunicorn app:app --bind 0.0.0.0:$PORT",
        "worker": "python worker.py",
    }
    assert list(parse_procfile("b: 1\na: 2\n")) == ["b", "a"]


def test_comments_blank_lines_crlf_and_bom_are_fine() -> None:
    text = (
        "\ufeff# processes\r\n\r\nweb:   bin/web  \r\n  # indented comment\r\nclock:bin/clock\r\n"
    )
    assert parse_procfile(text) == {"web": "bin/web", "clock": "bin/clock"}


def test_commands_keep_colons_quotes_and_shell() -> None:
    text = "release: ./manage.py migrate && echo 'done: yes' # note\nweb-2_x: a:b"
    assert parse_procfile(text) == {
        "release": "./manage.py migrate && echo 'done: yes' # note",
        "web-2_x": "a:b",
    }


def test_empty_procfile_declares_nothing() -> None:
    assert parse_procfile("") == {}
    assert parse_procfile("# nothing yet\n\n") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web: ok\nthis is not a process\n", 'Procfile line 2: expected "name: command"'),
        ("web: ok\n\n: bin/web\n", 'Procfile line 3: expected "name: command"'),
        ("my web: bin/web\n", "Procfile line 1: invalid process type 'my web'"),
        ("wéb: bin/web\n", "Procfile line 1: invalid process type 'wéb'"),
        ("web:\n", "Procfile line 1: process type 'web' has no command"),
        ("web:   \n", "Procfile line 1: process type 'web' has no command"),
        (
            "web: a\n# c\nworker: b\nweb: c\n",
            "Procfile line 4: process type 'web' is declared twice (first on line 1)",
        ),
    ],
)
def test_bad_lines_are_refused_by_line_number(text: str, message: str) -> None:
    with pytest.raises(ProcfileError) as error:
        parse_procfile(text)
    assert str(error.value).startswith(message)
    assert isinstance(error.value, ValueError)


def test_process_type_names_are_case_sensitive() -> None:
    assert parse_procfile("web: a\nWeb: b\n") == {"web": "a", "Web": "b"}
